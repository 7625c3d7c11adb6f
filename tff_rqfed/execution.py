"""The TFF execution context and the clean-up of its C++ worker subprocess.

TFF 0.87 runs computations in a `worker_binary` subprocess reached over gRPC
(`tff.backends.native.set_sync_local_cpp_execution_context`). The worker inherits the parent's stdout
and stderr and is only stopped from a `__del__`, so it can outlive the Python process and hold pipes
open (a CI step or `make` then never ends). `set_execution_context` starts the context, registers
`kill_workers` with atexit (normal exit and uncaught errors) and turns SIGTERM into an exception like
Ctrl-C's, so a terminated run also unwinds, saves its results and stops the worker. A SIGKILL runs
none of that, so a small reaper process (`_REAPER`, started once) watches this process and its
workers and kills the workers when this process is gone (else a killed FedCIA run would leave its
8 GB worker behind; the worker does not notice its parent's death).

The pip worker has no CUDA: TFF computations run on CPU even on a GPU machine. Server-side work that
runs in this Python process between rounds (RQ-kmeans) sees the GPU through `tf.config`.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import subprocess
import sys

import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.worker_processes import worker_pids

_installed = False


def kill_workers() -> int:
  """Kills this process's TFF workers; returns how many were signalled."""
  pids = worker_pids()
  for pid in pids:
    try:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
      pass
  return len(pids)


# Run as `python -c _REAPER PARENT_PID` in its own session: every second it records the parent's TFF
# workers; once the parent has exited (or is a zombie) it kills the workers it recorded, then exits.
_REAPER = '''
import os, signal, sys, time
sys.path.insert(0, sys.argv[2])
from tff_rqfed.worker_processes import alive, worker_pids
parent, seen = int(sys.argv[1]), set()
while alive(parent):
  seen.update(worker_pids(parent))
  time.sleep(1.0)
for pid in seen:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
'''


def _start_reaper() -> None:
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.Popen([sys.executable, '-c', _REAPER, str(os.getpid()), package_root],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   start_new_session=True)


class Terminated(KeyboardInterrupt):
  """Raised in the main thread on SIGTERM, so it unwinds like Ctrl-C."""


def _on_signal(signum, frame):
  """Turns SIGINT/SIGTERM into an exception in the main thread.

  The worker is not killed here: a round in flight would fail with a gRPC error instead of this
  exception. The simulation loop catches it, evaluates and writes the best state reached (NumPy
  only), and `kill_workers` runs at exit through atexit.
  """
  del frame
  if signum == signal.SIGTERM:
    raise Terminated
  raise KeyboardInterrupt


# glibc returns large freed blocks to the OS (mmap/munmap, heap trimming), so every 3 MB tensor a
# client step allocates page-faults anew; measured on FedMF/ML-100k, a third of the worker's CPU time
# was system time. Keeping freed memory in the heap cut system time by about 40% and the round time
# by 10-30% (benchmarks/round_speed.py). The worker inherits these from this process's environment.
_WORKER_MALLOC_ENV = {
    'MALLOC_MMAP_THRESHOLD_': str(2**31 - 1),
    'MALLOC_TRIM_THRESHOLD_': str(2**32 - 1),
    'MALLOC_TOP_PAD_': str(2**29),
}


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
  """How the TFF worker runs client work; the one place these are set.

  Attributes:
    max_concurrent_computation_calls: client computations the worker runs at once (-1: no limit).
    inter_op_threads, intra_op_threads: sizes of the worker's TensorFlow thread pools (0: TF's
      default, one thread per core). TFF builds the worker's sessions with default options, so
      they reach it as TF_NUM_INTEROP_THREADS / TF_NUM_INTRAOP_THREADS in its environment.

  The defaults, one client computation per core, one inter-op thread per core and single-threaded
  kernels, are the fastest setting measured (README, "Seconds per round"; FedMF on ML-100k, 2 cores,
  alternating pairs: 1.59 and 1.86 s a round against 2.52 and 2.35 s with TFF's defaults of no limit
  and TF's default pools). A client's
  kernels are small (a batch of 256 x 512), so splitting each over threads costs more than it gains,
  while clients in parallel keep every core busy. Note that the inter-op pool is shared by all of the
  worker's sessions: `inter_op_threads=1` runs every client on one core.
  """

  max_concurrent_computation_calls: int = dataclasses.field(default_factory=lambda: _cores())
  inter_op_threads: int = dataclasses.field(default_factory=lambda: _cores())
  intra_op_threads: int = 1

  def __post_init__(self):
    if self.max_concurrent_computation_calls == 0 or self.max_concurrent_computation_calls < -1:
      raise ValueError('max_concurrent_computation_calls must be -1 (no limit) or >= 1, got '
                       f'{self.max_concurrent_computation_calls!r}')
    for name in ('inter_op_threads', 'intra_op_threads'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0 (0: TensorFlow default), got {getattr(self, name)!r}')

  def worker_environment(self) -> dict[str, str]:
    """Environment variables the worker reads at start."""
    env = dict(_WORKER_MALLOC_ENV)
    if self.inter_op_threads:
      env['TF_NUM_INTEROP_THREADS'] = str(self.inter_op_threads)
    if self.intra_op_threads:
      env['TF_NUM_INTRAOP_THREADS'] = str(self.intra_op_threads)
    return env


def _cores() -> int:
  return os.cpu_count() or 1


def set_execution_context(config: WorkerConfig | None = None) -> None:
  """Installs TFF's local C++ execution context and the worker clean-up (idempotent).

  TFF starts the worker lazily with this process's environment, so `config`'s variables are set in
  `os.environ` (only where the caller has not set them). This process's own TensorFlow is
  initialised first, so its thread pools (evaluation, the RQ-kmeans refresh) keep TF's defaults.
  """
  global _installed
  config = config or WorkerConfig()
  tf.constant(0)  # initialises this process's TF runtime before the worker's variables are set
  for key, value in config.worker_environment().items():
    os.environ.setdefault(key, value)
  tff.backends.native.set_sync_local_cpp_execution_context(
      max_concurrent_computation_calls=config.max_concurrent_computation_calls
  )
  if not _installed:
    atexit.register(kill_workers)
    _start_reaper()
    for signum in (signal.SIGINT, signal.SIGTERM):
      if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
        signal.signal(signum, _on_signal)
    _installed = True

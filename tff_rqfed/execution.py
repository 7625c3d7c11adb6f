"""The TFF execution context and the clean-up of its C++ worker subprocess.

TFF 0.87 runs computations in a `worker_binary` subprocess reached over gRPC
(`tff.backends.native.set_sync_local_cpp_execution_context`). The worker inherits the parent's stdout
and stderr and is only stopped from a `__del__`, so it can outlive the Python process and hold pipes
open (a CI step or `make` then never ends). `set_execution_context` starts the context, registers
`kill_workers` with atexit (normal exit and uncaught errors) and turns SIGTERM into an exception like
Ctrl-C's, so a terminated run also unwinds and stops the worker (inside the training loop, the
simulation's own handlers only request a stop at the next round: `simulation._StopRequests`).
A SIGKILL runs none of that, so a small reaper process (`_REAPER`, started once) watches this
process and its workers and kills the workers when this process is gone (else a killed FedCIA run
would leave its 8 GB worker behind; the worker does not notice its parent's death).

The pip worker has no CUDA: TFF computations run on CPU even on a GPU machine. Server-side work that
runs in this Python process between rounds (RQ-kmeans) sees the GPU through `tf.config`.
"""

from __future__ import annotations

import atexit
from concurrent import futures
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

import grpc
import portpicker
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import devices
from tff_rqfed.worker_processes import worker_pids

_installed = False  # the clean-up (atexit, reaper, signal handlers) is set up
_context_installed = False  # TFF's default context is ours and its worker has not been killed


def kill_workers() -> int:
  """Kills this process's TFF workers; returns how many were signalled. The next
  `set_execution_context` installs a fresh context."""
  global _context_installed
  _context_installed = False
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
  """Turns SIGINT/SIGTERM into an exception in the main thread, outside the training loop (data
  loading, building the process); the loop replaces this handler while it runs
  (`simulation._StopRequests`). The worker is not killed here; `kill_workers` runs at exit through
  atexit.
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
    malloc_arenas: glibc heaps the worker may use (`MALLOC_ARENA_MAX`; 0: glibc's default, eight
      per core). The worker never gives freed memory back (`_WORKER_MALLOC_ENV`), so each arena
      keeps its own high-water mark; with glibc's default the worker's threads spread over up to 16
      arenas on 2 cores and it grew from round to round (GPFedRec with one user per client: about
      0.3 GB a round at d = 512). One arena per core keeps it flat (`benchmarks/run_memory.py`,
      `worker_peak_gib_by_round`).

  The defaults, one client computation per core, one inter-op thread per core and single-threaded
  kernels, are the fastest setting measured (docs/SPEED.md, "Seconds per round"; FedMF on ML-100k, 2 cores,
  alternating pairs: 1.59 and 1.86 s a round against 2.52 and 2.35 s with TFF's defaults of no limit
  and TF's default pools). A client's
  kernels are small (a batch of 256 x 512), so splitting each over threads costs more than it gains,
  while clients in parallel keep every core busy. Note that the inter-op pool is shared by all of the
  worker's sessions: `inter_op_threads=1` runs every client on one core.
  """

  max_concurrent_computation_calls: int = dataclasses.field(default_factory=lambda: _cores())
  inter_op_threads: int = dataclasses.field(default_factory=lambda: _cores())
  intra_op_threads: int = 1
  malloc_arenas: int = dataclasses.field(default_factory=lambda: _cores())

  def __post_init__(self):
    if self.max_concurrent_computation_calls == 0 or self.max_concurrent_computation_calls < -1:
      raise ValueError('max_concurrent_computation_calls must be -1 (no limit) or >= 1, got '
                       f'{self.max_concurrent_computation_calls!r}')
    for name, library in (('inter_op_threads', 'TensorFlow'), ('intra_op_threads', 'TensorFlow'),
                          ('malloc_arenas', 'glibc')):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0 (0: {library} default), got {getattr(self, name)!r}')

  def worker_environment(self) -> dict[str, str]:
    """Environment variables the worker reads at start."""
    env = dict(_WORKER_MALLOC_ENV)
    if self.inter_op_threads:
      env['TF_NUM_INTEROP_THREADS'] = str(self.inter_op_threads)
    if self.intra_op_threads:
      env['TF_NUM_INTRAOP_THREADS'] = str(self.intra_op_threads)
    if self.malloc_arenas:
      env['MALLOC_ARENA_MAX'] = str(self.malloc_arenas)
    return env


def _cores() -> int:
  return os.cpu_count() or 1


def set_execution_context(config: WorkerConfig | None = None) -> None:
  """Installs TFF's local C++ execution context and the worker clean-up (idempotent).

  TFF starts the worker lazily with this process's environment, so `config`'s variables are set in
  `os.environ` (only where the caller has not set them). This process's own TensorFlow is
  initialised first, so its thread pools (evaluation, the RQ-kmeans refresh) keep TF's defaults.

  The context is installed once, until `kill_workers`: `config` of a later call is ignored. Replacing
  a context whose worker runs makes TFF stop that worker with SIGINT and wait for it, which never
  returns where SIGINT is ignored (a process started in the background by a non-interactive shell).
  """
  global _installed, _context_installed
  config = config or WorkerConfig()
  devices.configure()  # GPU memory growth, before this process's TF runtime starts
  tf.constant(0)  # initialises this process's TF runtime before the worker's variables are set
  for key, value in config.worker_environment().items():
    os.environ.setdefault(key, value)
  if not _context_installed:
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=config.max_concurrent_computation_calls
    )
    _context_installed = True
  if not _installed:
    atexit.register(kill_workers)
    _start_reaper()
    for signum in (signal.SIGINT, signal.SIGTERM):
      if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
        signal.signal(signum, _on_signal)
    _installed = True


class WorkerError(RuntimeError):
  """A TFF worker failed while running a client shard (it died, or could not be reached)."""


# The gRPC limits TFF's own local context uses (`executor_factory._GRPC_CHANNEL_OPTIONS`): a client
# shard's states and a 3706 x 512 table are far above gRPC's 4 MB default.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_CHANNEL_OPTIONS = [('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
                         ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
                         ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES)]


class Workers:
  """Where the client shards of a round run (`sharding.ShardedRound`): one TFF execution context per
  worker, shard s on worker s mod N, each worker's shards in order in a thread of its own.

  `Workers()` is this thread's installed context (one worker, the shards one after another). Build
  several with `local_workers` (worker processes on this machine) or `remote_workers` (workers
  started elsewhere). Each context is a separate `tff.framework.SyncExecutionContext` with its own
  event loop, so one worker's blocking gRPC calls do not hold back another's.
  """

  def __init__(self, contexts: Sequence[Any] = (), names: Sequence[str] = ()):
    self._contexts = list(contexts)
    self._names = list(names) or [f'worker {i}' for i in range(len(self._contexts))]
    self.processes: list[subprocess.Popen] = []  # the worker processes `local_workers` started

  @property
  def count(self) -> int:
    return max(1, len(self._contexts))

  def map(self, computation, calls: Sequence[tuple]) -> list:
    """[computation(*call) for call in calls], call s on worker s mod N; results in the calls' order.

    Raises WorkerError naming the worker and the shard when a worker fails.
    """
    if not self._contexts:
      return [computation(*call) for call in calls]
    results = [None] * len(calls)

    def run(worker: int) -> None:
      with tff.framework.get_context_stack().install(self._contexts[worker]):
        for shard in range(worker, len(calls), len(self._contexts)):
          try:
            results[shard] = computation(*calls[shard])
          except Exception as e:  # a dead worker surfaces as a WorkerError, gRPC or TFF runtime error
            detail = str(e) if isinstance(e, WorkerError) else f'{type(e).__name__}: {e}'
            raise WorkerError(f'{self._names[worker]} failed on client shard {shard}: '
                              f'{detail.splitlines()[0] if detail else ""}') from e

    with futures.ThreadPoolExecutor(len(self._contexts)) as pool:
      for outcome in [pool.submit(run, w) for w in range(len(self._contexts))]:
        outcome.result()
    return results


def worker_binary() -> str:
  """Path of TFF's executor service, `worker_binary`, shipped in the tensorflow-federated wheel."""
  path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(f'no TFF worker binary at {path}: is tensorflow-federated 0.87 installed?')
  return path


def worker_command(port: int, config: WorkerConfig) -> tuple[list[str], dict[str, str]]:
  """(argv, environment) that start a TFF worker serving on `port` with `config`'s settings."""
  argv = [worker_binary(), f'--port={port}',
          f'--max_concurrent_computation_calls={config.max_concurrent_computation_calls}',
          f'--grpc_max_message_length_megabytes={_GRPC_MAX_MESSAGE_BYTES // 1_000_000}']
  return argv, {**os.environ, **config.worker_environment()}


def local_workers(count: int, config: WorkerConfig | None = None, *, timeout_s: float = 30.0) -> Workers:
  """`count` TFF workers started on this machine, each with `config`'s concurrency and thread pools;
  killed at exit like the default context's worker (`kill_workers` and the reaper find them).
  `timeout_s`: see `remote_workers`."""
  if count < 1:
    raise ValueError(f'workers must be >= 1, got {count!r}')
  config = config or WorkerConfig()
  set_execution_context(config)
  addresses, processes = [], []
  for _ in range(count):
    port = portpicker.pick_unused_port()
    argv, env = worker_command(port, config)
    processes.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL))
    addresses.append(f'localhost:{port}')
  workers = remote_workers(addresses, timeout_s=timeout_s,
                           names=[f'local worker {i} ({a})' for i, a in enumerate(addresses)])
  workers.processes = processes
  return workers


def parse_address(address: str) -> tuple[str, int]:
  """('host', port) from 'host:port'; a ValueError quotes a bad address."""
  host, _, port = address.strip().rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f'a worker address must be host:port, got {address!r}')
  return host, int(port)


def remote_workers(addresses: Sequence[str], *, timeout_s: float = 30.0,
                   names: Sequence[str] = ()) -> Workers:
  """TFF workers already running at `addresses` ('host:port', started with
  `python -m launchers.worker --port=PORT` or TFF's `worker_binary --port=PORT` directly).

  Insecure gRPC, no authentication (TFF's worker offers nothing else): a private network or an SSH
  tunnel only. A WorkerError names an address that does not answer within `timeout_s`, at the start
  or after a failed call (a worker that died mid-round).
  """
  set_execution_context()
  contexts = []
  for address in addresses:
    host, port = parse_address(address)
    stub = _FailFastStub(_connect(f'{host}:{port}', timeout_s), address, timeout_s)

    def stack_fn(cardinalities, stub=stub):
      cardinalities.setdefault(tff.CLIENTS, 0)  # a computation without CLIENTS values (as TFF's own)
      executor = tff.framework.RemoteExecutor(stub)
      executor.set_cardinalities(cardinalities)
      return executor

    contexts.append(tff.framework.SyncExecutionContext(
        executor_fn=tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn),
        compiler_fn=tff.backends.native.desugar_and_transform_to_native,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result))
  return Workers(contexts, names=list(names) or [f'worker {a}' for a in addresses])


class _FailFastStub(tff.framework.RemoteExecutorStub):
  """A worker's gRPC stub whose failures end the round once the worker is gone.

  TFF's execution context retries a call that failed with a retryable gRPC error (UNAVAILABLE, ...)
  for ever, waiting up to 30 s between tries: right for its own local worker, which it restarts, but
  a dead remote worker would hang the run. Here a retryable error becomes a WorkerError (which TFF
  does not retry) unless the worker answers again within `timeout_s`.
  """

  def __init__(self, stub, address: str, timeout_s: float):
    self._stub, self._address, self._timeout_s = stub, address, timeout_s
    self._gone = None  # the WorkerError once the worker is found gone: later calls fail at once

  def _call(self, method: str, request):
    if self._gone is not None:
      raise self._gone
    try:
      return getattr(self._stub, method)(request)
    except tff.framework.RetryableError as e:
      if not _wait_ready(self._stub, self._timeout_s):
        self._gone = WorkerError(f'the TFF worker at {self._address} stopped answering '
                                 f'({type(e).__name__}); a run continues from its last saved '
                                 'round with --resume')
        raise self._gone from e
      raise

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    return self._call('create_value', request)

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    return self._call('compute', request)

  def dispose(self, request):
    return self._call('dispose', request)

  def dispose_executor(self, request):
    return self._call('dispose_executor', request)

  @property
  def is_ready(self) -> bool:
    return self._stub.is_ready


def _wait_ready(stub, timeout_s: float) -> bool:
  """Whether the worker behind `stub` answers (its channel is ready) within `timeout_s`."""
  deadline = time.monotonic() + timeout_s
  while not stub.is_ready:
    if time.monotonic() > deadline:
      return False
    time.sleep(0.2)
  return True


def _connect(target: str, timeout_s: float):
  stub = tff.framework.RemoteExecutorGrpcStub(grpc.insecure_channel(target, _GRPC_CHANNEL_OPTIONS))
  if not _wait_ready(stub, timeout_s):
    raise WorkerError(f'no TFF worker answers at {target} after {timeout_s:g} s')
  return stub

"""TFF worker processes of a parent process, and their peak memory, read from /proc (no TensorFlow
import: the reaper of `execution._REAPER` runs this in a small separate process)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable

_WORKER_NAME = b'worker_binary'


def _stat_fields(pid) -> list[bytes]:
  """The fields of /proc/PID/stat after `comm`: index 0 is the state (field 3 of proc(5)), 1 the
  parent, 11 and 12 the user and system CPU ticks. `comm` may contain spaces, so split after ')'.
  Raises OSError when the process is gone."""
  with open(f'/proc/{pid}/stat', 'rb') as f:
    return f.read().rsplit(b')', 1)[1].split()


def worker_pids(parent: int | None = None) -> list[int]:
  """PIDs of TFF worker processes whose parent is `parent` (default: this process)."""
  parent = os.getpid() if parent is None else parent
  pids = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      ppid = int(_stat_fields(entry)[1])
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        cmdline = f.read()
    except OSError:
      continue
    if ppid == parent and _WORKER_NAME in cmdline:
      pids.append(int(entry))
  return pids


def alive(pid: int) -> bool:
  """Whether `pid` is a running process (not a zombie)."""
  try:
    return _stat_fields(pid)[0] != b'Z'
  except OSError:
    return False


def cpu_seconds(pid: int) -> float:
  """User plus system CPU seconds `pid` has used so far (OSError when it is gone)."""
  fields = _stat_fields(pid)
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def peak_memory_gib(pid: int) -> float | None:
  """The peak resident memory the kernel records for `pid` (VmHWM) in GiB, or None once it is gone."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 2**20
  except OSError:
    return None
  return None


def _largest(peaks: dict[int, float | None]) -> float | None:
  """The largest of the peaks read so far, None if none was read."""
  return max((peak for peak in peaks.values() if peak is not None), default=None)


def watch_peaks(process: subprocess.Popen, interval: float,
                rounds_done: Callable[[], int] | None = None) -> dict[str, float | list | None]:
  """Until `process` exits, every `interval` seconds: its peak memory and the largest peak of the TFF
  workers it started (GiB; None for workers if none ran). VmHWM is the kernel's high-water mark, so a
  peak between two reads is not missed, only what a process reaches after the last read before it exits.

  With `rounds_done` (how many rounds the run has finished so far, e.g. the rows of its rounds.csv)
  the result also has `worker_peak_gib_by_round`: entry r - 1 is the workers' largest peak read when
  round r was first seen finished (the worker's memory after r rounds; it keeps freed memory, so its
  peak grows from round to round only if each round needs more of it).
  """
  launcher, workers, by_round = None, {}, []
  while process.poll() is None:
    launcher = peak_memory_gib(process.pid) or launcher
    for pid in worker_pids(process.pid):
      workers[pid] = peak_memory_gib(pid) or workers.get(pid)
    if rounds_done is not None:
      by_round.extend([_largest(workers)] * (rounds_done() - len(by_round)))
    time.sleep(interval)
  result = {'launcher_peak_gib': launcher, 'worker_peak_gib': _largest(workers)}
  if rounds_done is not None:  # rounds finished after the last read get the last peak read
    by_round.extend([result['worker_peak_gib']] * (rounds_done() - len(by_round)))
    result['worker_peak_gib_by_round'] = by_round
  return result

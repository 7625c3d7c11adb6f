"""TFF worker processes of a parent process, read from /proc (no TensorFlow import: the reaper of
`execution._REAPER` runs this in a small separate process)."""

from __future__ import annotations

import os

_WORKER_NAME = b'worker_binary'


def worker_pids(parent: int | None = None) -> list[int]:
  """PIDs of TFF worker processes whose parent is `parent` (default: this process)."""
  parent = os.getpid() if parent is None else parent
  pids = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat', 'rb') as f:
        stat = f.read()
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        cmdline = f.read()
    except OSError:
      continue
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may contain spaces, so split after ')'.
    ppid = int(stat.rsplit(b')', 1)[1].split()[1])
    if ppid == parent and _WORKER_NAME in cmdline:
      pids.append(int(entry))
  return pids


def alive(pid: int) -> bool:
  """Whether `pid` is a running process (not a zombie)."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      return f.read().rsplit(b')', 1)[1].split()[0] != b'Z'
  except OSError:
    return False

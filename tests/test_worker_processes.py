"""Tests of the peak-memory reading of worker_processes (a plain subprocess; no TFF)."""

import subprocess
import sys

from tff_rqfed import worker_processes


def test_watch_reports_the_peak_a_subprocess_reached_after_it_freed_it():
  # Touches 300 MiB, frees it, then idles: the peak must still show it (VmHWM), the current RSS would not.
  script = ('import time; b = bytearray(300 * 2**20); b[::4096] = b"x" * len(b[::4096]); del b; '
            'time.sleep(1.5)')
  with subprocess.Popen([sys.executable, '-c', script]) as process:
    peaks = worker_processes.watch_peaks(process, interval=0.1)
  assert process.returncode == 0
  assert 0.29 < peaks['launcher_peak_gib'] < 1.0
  assert peaks['worker_peak_gib'] is None  # it started no TFF worker


def test_peak_of_a_process_that_does_not_exist_is_none():
  with open('/proc/sys/kernel/pid_max') as f:
    beyond = int(f.read()) + 1  # no process can have this id
  assert worker_processes.peak_memory_gib(beyond) is None

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


def test_worker_peak_by_round_follows_a_worker_that_grows_each_round(tmp_path):
  # The parent starts a child whose command line names the TFF worker binary; the child touches
  # 100 MiB more each "round" and then appends a line to a file, which stands for rounds.csv.
  rounds = tmp_path / 'rounds.txt'
  child = ('import sys, time; kept = []\n'
           'for r in range(3):\n'
           '  b = bytearray(100 * 2**20); b[::4096] = b"x" * len(b[::4096]); kept.append(b)\n'
           '  time.sleep(0.5)\n'
           f'  open({str(rounds)!r}, "a").write("round\\n")\n'
           '  time.sleep(0.5)\n')
  parent = ('import subprocess, sys; '
            f'subprocess.run([sys.executable, "-c", {child!r}, "worker_binary"], check=True)')
  with subprocess.Popen([sys.executable, '-c', parent]) as process:
    peaks = worker_processes.watch_peaks(
        process, interval=0.1,
        rounds_done=lambda: len(rounds.read_text().splitlines()) if rounds.exists() else 0)
  assert process.returncode == 0
  by_round = peaks['worker_peak_gib_by_round']
  assert len(by_round) == 3
  steps = [later - earlier for earlier, later in zip(by_round, by_round[1:])]
  assert all(0.08 < step < 0.12 for step in steps), by_round  # 100 MiB = 0.098 GiB a round
  assert peaks['worker_peak_gib'] >= by_round[-1]


def test_watch_without_rounds_reports_no_per_round_peaks():
  with subprocess.Popen([sys.executable, '-c', 'pass']) as process:
    peaks = worker_processes.watch_peaks(process, interval=0.05)
  assert 'worker_peak_gib_by_round' not in peaks

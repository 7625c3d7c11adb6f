"""A sweep whose runner is killed (SIGKILL) mid-cell resumes cell by cell to the uninterrupted results.

Two 25-round FedMF cells of `launchers.experiments --quick --grid`: the runner is killed while the
second cell trains, after that cell has saved a program state. The killed runner's cell must stop on
its own (parent-death signal), leaving an interrupted summary; rerunning the same command reads the
first cell, resumes the second from its saved round, and ends with the uninterrupted sweep's metrics.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tff_rqfed.experiments import cells

REPO = pathlib.Path(__file__).resolve().parents[2]
CELLS = ('grid/fedmf-lr0.05-wd0-s0', 'grid/fedmf-lr0.01-wd0-s0')


def _command(output_dir):
  return [sys.executable, '-m', 'launchers.experiments', '--quick', '--progress=false', '--grid',
          '--methods=fedmf', '--learning_rates=0.05,0.01', '--weight_decays=0', '--rounds=25',
          f'--output_dir={output_dir}']


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


def _rounds_done(cell_dir) -> int:
  try:
    return len(pd.read_csv(cell_dir / 'rounds.csv'))
  except (OSError, ValueError):
    return 0


def _lock_is_free(cell_dir) -> bool:
  fd = os.open(cell_dir / cells.LOCK_FILE, os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  finally:
    os.close(fd)


def _wait(condition, timeout):
  deadline = time.time() + timeout
  while not condition() and time.time() < deadline:
    time.sleep(0.02)
  return condition()


@pytest.fixture(scope='module')
def sweeps(tmp_path_factory):
  root = tmp_path_factory.mktemp('sweep')
  # The uninterrupted sweep runs beside the one to be killed (one per core); its output goes to files,
  # which cannot fill up as an unread pipe would.
  out, err = open(root / 'whole.out', 'w'), open(root / 'whole.err', 'w')
  whole = subprocess.Popen(_command(root / 'whole'), cwd=REPO, env=_env(), stdout=out, stderr=err)
  killed = root / 'killed'
  runner = subprocess.Popen(_command(killed), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  second = killed / CELLS[1]
  reached = _wait(lambda: _rounds_done(second) >= 7 or runner.poll() is not None, timeout=600)
  runner.send_signal(signal.SIGKILL)
  runner.wait()
  at_kill = {'reached': reached, 'rounds': _rounds_done(second),
             'first_finished': (killed / CELLS[0] / 'summary.json').exists()}
  at_kill['cell_stopped'] = _wait(lambda: _lock_is_free(second), timeout=120)
  at_kill['summary'] = json.loads((second / 'summary.json').read_text()) if (
      second / 'summary.json').exists() else None
  first_mtime = (killed / CELLS[0] / 'summary.json').stat().st_mtime_ns
  resumed = subprocess.run(_command(killed), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=900)
  whole.wait(timeout=900)
  out.close()
  err.close()
  whole = subprocess.CompletedProcess(whole.args, whole.returncode, *(
      (root / name).read_text() for name in ('whole.out', 'whole.err')))
  return {'root': root, 'whole': whole, 'resumed': resumed, 'at_kill': at_kill,
          'first_mtime': first_mtime}


def test_the_runner_was_killed_while_the_second_cell_trained(sweeps):
  assert sweeps['whole'].returncode == 0, sweeps['whole'].stderr[-3000:]
  at_kill = sweeps['at_kill']
  assert at_kill['reached'] and at_kill['first_finished']
  assert 7 <= at_kill['rounds'] < 25


def test_the_killed_runners_cell_stops_and_marks_its_summary_interrupted(sweeps):
  at_kill = sweeps['at_kill']
  assert at_kill['cell_stopped']  # its process exited: the cell's lock is free
  assert at_kill['summary'] is not None and at_kill['summary']['interrupted'] is True


def test_the_rerun_reads_the_finished_cell_and_resumes_the_killed_one(sweeps):
  assert sweeps['resumed'].returncode == 0, sweeps['resumed'].stderr[-3000:]
  killed = sweeps['root'] / 'killed'
  assert (killed / CELLS[0] / 'summary.json').stat().st_mtime_ns == sweeps['first_mtime']
  summary = json.loads((killed / CELLS[1] / 'summary.json').read_text())
  assert summary['interrupted'] is False and summary['resumed_from_round'] >= 5
  log = (killed / CELLS[1] / 'log.txt').read_text()
  assert log.count('--- ') == 2  # the killed part's log is kept, the resumed part appended


def test_the_resumed_sweep_ends_with_the_uninterrupted_sweeps_metrics(sweeps):
  frames = [pd.read_csv(sweeps['root'] / name / 'grid.csv').set_index('cell').sort_index()
            for name in ('whole', 'killed')]
  metrics = [column for column in frames[0].columns
             if column.startswith(('test/', 'test_paper/', 'valid/')) or column == 'best_round']
  assert metrics
  pd.testing.assert_frame_equal(frames[0][metrics], frames[1][metrics])
  for cell in CELLS:
    rounds = [pd.read_csv(sweeps['root'] / name / cell / 'rounds.csv').drop(columns='seconds')
              for name in ('whole', 'killed')]
    pd.testing.assert_frame_equal(rounds[0], rounds[1])

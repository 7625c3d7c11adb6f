"""A run killed with SIGKILL and resumed (`--resume`) ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tff_rqfed import execution
from tff_rqfed import worker_processes

REPO = pathlib.Path(__file__).resolve().parents[1]
ROUNDS = 30


def _write_interactions(path):
  """30 users x 40 items in two communities (users 1-15 like items 101-120, the others 121-140)."""
  rng = np.random.default_rng(0)
  lines = ['user_id\titem_id']
  for u in range(30):
    group = 101 + np.arange(20) + (0 if u < 15 else 20)
    lines += [f'{u + 1}\t{item}' for item in rng.choice(group, size=14, replace=False)]
  path.write_text('\n'.join(lines) + '\n')


def _command(output_dir, interactions_file, *extra):
  return [sys.executable, '-m', 'launchers.simulate', '--dataset=file', f'--interactions_file={interactions_file}',
          '--protocol=per_user', '--clients=3', '--embedding_dim=8', f'--rounds={ROUNDS}', '--patience=100',
          '--learning_rate=0.05', '--algorithm=rqfedrec', '--levels=2', '--codes_per_level=4',
          '--refresh_every=3', '--warmup_rounds=2', '--kmeans_dim=8', '--checkpoint_every=2',
          f'--data_dir={output_dir.parent / "data"}', f'--output_dir={output_dir}', '--progress=false',
          *extra]


def _rounds_done(output_dir) -> int:
  try:
    return len(pd.read_csv(output_dir / 'rounds.csv'))
  except (OSError, ValueError):
    return 0


def _sweep_folder(tmp_path_factory, name: str):
  """(folder, its synthetic interaction file, the runs' environment)."""
  root = tmp_path_factory.mktemp(name)
  interactions_file = root / 'synthetic.tsv'
  _write_interactions(interactions_file)
  return root, interactions_file, dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root, interactions_file, env = _sweep_folder(tmp_path_factory, 'resume')
  # The uninterrupted run trains beside the one to be killed (one per core); its output goes to files,
  # which cannot fill up as an unread pipe would.
  out, err = open(root / 'whole.out', 'w'), open(root / 'whole.err', 'w')
  whole = subprocess.Popen(_command(root / 'whole', interactions_file), cwd=REPO, env=env,
                           stdout=out, stderr=err)
  killed_dir = root / 'killed'
  proc = subprocess.Popen(_command(killed_dir, interactions_file), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while _rounds_done(killed_dir) < 9 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  workers = execution.worker_pids(proc.pid)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 10
  while any(worker_processes.alive(pid) for pid in workers) and time.time() < deadline:
    time.sleep(0.1)
  after_kill = {'rounds': _rounds_done(killed_dir), 'summary': (killed_dir / 'summary.json').exists(),
                'workers': workers, 'workers_left': [pid for pid in workers if worker_processes.alive(pid)],
                'files': sorted(p.relative_to(killed_dir).as_posix() for p in killed_dir.rglob('*'))}
  resumed = subprocess.run(_command(killed_dir, interactions_file, '--resume'), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
  whole.wait(timeout=600)
  out.close()
  err.close()
  whole = subprocess.CompletedProcess(whole.args, whole.returncode, *(
      (root / name).read_text() for name in ('whole.out', 'whole.err')))
  return {'whole': whole, 'resumed': resumed, 'after_kill': after_kill, 'root': root}


def test_the_run_was_killed_mid_training(runs):
  assert runs['whole'].returncode == 0, runs['whole'].stderr[-3000:]
  assert 9 <= runs['after_kill']['rounds'] < ROUNDS
  assert not runs['after_kill']['summary']


def test_the_killed_runs_worker_does_not_outlive_it(runs):
  assert len(runs['after_kill']['workers']) == 1  # the run had started its TFF worker
  assert runs['after_kill']['workers_left'] == []  # the reaper killed it within seconds


def test_resumed_run_ends_with_the_metrics_of_the_uninterrupted_run(runs):
  assert runs['resumed'].returncode == 0, runs['resumed'].stderr[-3000:]
  whole = json.loads((runs['root'] / 'whole' / 'summary.json').read_text())
  resumed = json.loads((runs['root'] / 'killed' / 'summary.json').read_text())
  assert resumed['resumed_from_round'] >= 8 and resumed['resumed_from_round'] % 2 == 0
  for key in ('test', 'test_paper', 'valid', 'valid_paper', 'best_round', 'rounds_run'):
    assert resumed[key] == whole[key], key
  rounds = [pd.read_csv(runs['root'] / name / 'rounds.csv').drop(columns='seconds')
            for name in ('whole', 'killed')]
  pd.testing.assert_frame_equal(rounds[0], rounds[1])


def test_a_kill_leaves_no_half_written_results_file(runs):
  killed = runs['root'] / 'killed'
  for name in runs['after_kill']['files']:
    path = killed / name
    if path.suffix == '.json':
      json.loads(path.read_text())
    elif path.suffix == '.csv':
      assert len(pd.read_csv(path)) >= 1
  versions = [p for p in (killed / 'program_state').iterdir() if p.name.split('_')[-1].isdigit()]
  assert len(versions) == 2  # the last two saved rounds are kept


def test_results_files_are_readable_like_any_file_the_user_creates(runs):
  umask = os.umask(0)
  os.umask(umask)
  for name in ('summary.json', 'rounds.csv', 'flags.json'):
    mode = (runs['root'] / 'whole' / name).stat().st_mode & 0o777
    assert mode == 0o666 & ~umask, (name, oct(mode))


# A TFF worker of `--workers=host:port` that dies mid-run (execution.remote_workers).

def _start_worker(port: int) -> subprocess.Popen:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen([sys.executable, '-m', 'launchers.worker', f'--port={port}'], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen) -> None:
  process.kill()
  process.wait()


@pytest.fixture(scope='module')
def worker_death(tmp_path_factory):
  import portpicker

  root, interactions_file, env = _sweep_folder(tmp_path_factory, 'worker_death')
  fedmf = ['--algorithm=fedmf', '--rounds=10', '--worker_timeout=3']
  # the uninterrupted run: one local worker, so one client shard, as one remote worker gives
  whole = subprocess.run(_command(root / 'whole', interactions_file, *fedmf, '--workers=1'), cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
  first_port, second_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  worker = _start_worker(first_port)
  killed_dir = root / 'killed'
  command = _command(killed_dir, interactions_file, *fedmf, f'--workers=localhost:{first_port}')
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 300
  while _rounds_done(killed_dir) < 5 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  _stop(worker)
  try:
    _, stderr = proc.communicate(timeout=120)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail('the run did not stop after its worker died')
  worker = _start_worker(second_port)
  try:
    resumed = subprocess.run(
        _command(killed_dir, interactions_file, *fedmf, f'--workers=localhost:{second_port}', '--resume'),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  finally:
    _stop(worker)
  return {'whole': whole, 'killed': (proc.returncode, stderr), 'resumed': resumed, 'root': root,
          'port': first_port}


def test_a_dead_worker_stops_the_run_with_one_line_naming_it(worker_death):
  code, stderr = worker_death['killed']
  lines = [line for line in stderr.strip().splitlines() if line.startswith('error: ')]
  assert code == 1, stderr[-3000:]
  assert len(lines) == 1 and 'stopped answering' in lines[0]
  assert f"localhost:{worker_death['port']}" in lines[0]


def test_a_run_whose_worker_died_resumes_on_another_worker_to_the_uninterrupted_result(worker_death):
  assert worker_death['whole'].returncode == 0, worker_death['whole'].stderr[-3000:]
  assert worker_death['resumed'].returncode == 0, worker_death['resumed'].stderr[-3000:]
  whole = json.loads((worker_death['root'] / 'whole' / 'summary.json').read_text())
  resumed = json.loads((worker_death['root'] / 'killed' / 'summary.json').read_text())
  assert 4 <= resumed['resumed_from_round'] < 10
  for key in ('test', 'test_paper', 'best_round', 'rounds_run'):
    assert resumed[key] == whole[key], key
  rounds = [pd.read_csv(worker_death['root'] / name / 'rounds.csv').drop(columns='seconds')
            for name in ('whole', 'killed')]
  pd.testing.assert_frame_equal(rounds[0], rounds[1])

"""End-to-end runs of `python -m launchers.simulate` on a tiny synthetic interaction file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_USERS, NUM_ITEMS = 30, 40
METRICS = ('recall@10', 'mrr@10', 'ndcg@10')


def _write_interactions(path):
  """30 users x 40 items: users 1-15 like items 101-120, users 16-30 items 121-140 (14 each)."""
  rng = np.random.default_rng(0)
  lines = ['user_id\titem_id\trating\ttimestamp']
  for u in range(NUM_USERS):
    group = 101 + np.arange(20) + (0 if u < NUM_USERS // 2 else 20)
    for j, item in enumerate(rng.choice(group, size=14, replace=False)):
      lines.append(f'{u + 1}\t{item}\t{1 + (u + j) % 5}\t{1000 + 10 * u + j}')
  path.write_text('\n'.join(lines) + '\n')


def _command(output_dir, interactions_file, *extra):
  command = [sys.executable, '-m', 'launchers.simulate', '--dataset=file', '--protocol=per_user',
             '--partition=blocks', '--clients=3', '--embedding_dim=8', '--rounds=4',
             '--learning_rate=0.05', f'--output_dir={output_dir}', '--save_topk', '--progress=false']
  if interactions_file is not None:
    command.append(f'--interactions_file={interactions_file}')
  return command + list(extra)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs the launcher for every scenario once; the tests below inspect the results."""
  root = tmp_path_factory.mktemp('simulate')
  interactions_file = root / 'synthetic.tsv'
  _write_interactions(interactions_file)
  commands = {
      'fedmf': _command(root / 'fedmf', interactions_file, '--algorithm=fedmf'),
      'fedmf_again': _command(root / 'fedmf_again', interactions_file, '--algorithm=fedmf'),
      'no_file': _command(root / 'no_file', None, '--algorithm=fedmf'),
      'rqfedrec': _command(root / 'rqfedrec', interactions_file, '--algorithm=rqfedrec',
                           '--channels=collaborative', '--codes_per_level=4', '--levels=2',
                           '--refresh_every=2', '--warmup_rounds=2'),
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  results = {}
  # One at a time: concurrent TensorFlow processes and TFF workers thrash a small machine.
  for name, command in commands.items():
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    results[name] = {'returncode': proc.returncode, 'stdout': proc.stdout, 'stderr': proc.stderr,
                     'dir': root / name}
  return results


def _ok(result):
  assert result['returncode'] == 0, result['stderr'][-3000:]
  return json.loads((result['dir'] / 'summary.json').read_text())


def test_fedmf_run_writes_summary_with_both_metric_sets_and_communication(runs):
  summary = _ok(runs['fedmf'])
  for key in ('test', 'test_paper'):
    assert set(METRICS) <= set(summary[key])
    assert all(0.0 <= summary[key][m] <= 1.0 for m in METRICS)
  assert summary['rounds_run'] == 4
  assert 1 <= summary['best_round'] <= 4
  assert summary['seconds_per_round'] > 0
  assert summary['communication']['upload'] == NUM_ITEMS * 8
  assert summary['communication']['download'] == NUM_ITEMS * 8
  assert summary['algorithm'] == 'fedmf' and summary['num_clients'] == 3


def test_fedmf_run_writes_rounds_flags_and_topk_files(runs):
  _ok(runs['fedmf'])
  out = runs['fedmf']['dir']
  rounds = pd.read_csv(out / 'rounds.csv')
  assert rounds['round'].tolist() == [1, 2, 3, 4]
  assert {'loss', 'valid_ndcg@10'} <= set(rounds.columns)
  flag_values = json.loads((out / 'flags.json').read_text())
  assert flag_values['algorithm'] == 'fedmf'
  assert flag_values['embedding_dim'] == 8
  # Defaulted per-algorithm values are recorded as the values the run used, not as null.
  from launchers import simulate
  assert flag_values['learning_rate'] == 0.05
  assert flag_values['init_scale'] == simulate.DEFAULT_INIT_SCALE['fedmf']
  topk = pd.read_csv(out / 'topk.csv')
  assert len(topk) == NUM_USERS  # per_user protocol: every user has test items
  assert sorted(topk['user_id']) == list(range(1, NUM_USERS + 1))
  items = topk[[f'item_{r}' for r in range(1, 11)]].to_numpy()
  assert items.min() >= 101 and items.max() <= 140
  assert all(len(set(row)) == 10 for row in items)


def test_same_seed_gives_identical_test_metrics(runs):
  first, second = _ok(runs['fedmf']), _ok(runs['fedmf_again'])
  assert first['test'] == second['test']
  assert first['test_paper'] == second['test_paper']
  assert first['best_round'] == second['best_round']
  a = pd.read_csv(runs['fedmf']['dir'] / 'rounds.csv')
  b = pd.read_csv(runs['fedmf_again']['dir'] / 'rounds.csv')
  assert a['loss'].tolist() == b['loss'].tolist()


def test_file_dataset_without_interactions_file_fails_naming_the_flag(runs):
  result = runs['no_file']
  assert result['returncode'] != 0
  assert '--interactions_file' in result['stderr'] + result['stdout']
  assert not (result['dir'] / 'summary.json').exists()


def test_rqfedrec_collaborative_only_run_completes(runs):
  summary = _ok(runs['rqfedrec'])
  assert summary['algorithm'] == 'rqfedrec'
  assert summary['rounds_run'] == 4
  assert set(METRICS) <= set(summary['test'])
  # Codebooks float32[2, L=2, M=4, d=8] up; codebooks plus two int32[40, 2] id tables down.
  assert summary['communication']['upload'] == 2 * 2 * 4 * 8
  assert summary['communication']['download'] == 2 * 2 * 4 * 8 + 2 * NUM_ITEMS * 2
  rounds = pd.read_csv(runs['rqfedrec']['dir'] / 'rounds.csv')
  assert rounds['collaborative_rate'].tolist() == [1.0] * 4
  assert rounds['refresh_change'].notna().tolist() == [False, True, False, True]


def test_sigterm_writes_the_best_state_stops_the_worker_and_exits_130(tmp_path):
  import signal
  import time

  from tff_rqfed import execution

  interactions_file = tmp_path / 'synthetic.tsv'
  _write_interactions(interactions_file)
  output_dir = tmp_path / 'terminated'
  command = _command(output_dir, interactions_file, '--algorithm=fedmf', '--rounds=100000',
                     '--patience=100000')
  proc = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    rounds_file = output_dir / 'rounds.csv'
    deadline = time.time() + 240
    while time.time() < deadline and (
        not rounds_file.exists() or len(rounds_file.read_text().splitlines()) < 3):
      time.sleep(0.5)
    workers = execution.worker_pids(parent=proc.pid)
    assert workers, 'the launcher should have started a TFF worker'
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
  finally:
    proc.kill()
  summary = json.loads((output_dir / 'summary.json').read_text())
  assert summary['interrupted'] is True and summary['rounds_run'] >= 2
  time.sleep(1)
  assert not any(os.path.exists(f'/proc/{pid}') for pid in workers)

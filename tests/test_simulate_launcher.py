"""End-to-end runs of `python -m launchers.simulate` on a tiny synthetic interaction file."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tff_rqfed import hyperparameters
from tff_rqfed.experiments import quick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_USERS, NUM_ITEMS = 30, 40
METRICS = ('recall@10', 'mrr@10', 'ndcg@10')


def _write_interactions(path):
  """30 users x 40 items: users 1-15 like items 101-120, users 16-30 items 121-140 (14 each)."""
  quick.write_interactions(path)


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
      'fedmf_two_shards': _command(root / 'fedmf_two_shards', interactions_file, '--algorithm=fedmf',
                                   '--client_shards=2'),
      'fedmf_two_workers': _command(root / 'fedmf_two_workers', interactions_file, '--algorithm=fedmf',
                                    '--workers=2'),
      'no_file': _command(root / 'no_file', None, '--algorithm=fedmf'),
      'rqfedrec': _command(root / 'rqfedrec', interactions_file, '--algorithm=rqfedrec',
                           '--channels=collaborative', '--codes_per_level=4', '--levels=2',
                           '--refresh_every=2', '--warmup_rounds=2'),
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')

  def run(name):
    proc = subprocess.run(commands[name], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return name, {'returncode': proc.returncode, 'stdout': proc.stdout, 'stderr': proc.stderr,
                  'dir': root / name, 'interactions_file': interactions_file}

  # Two at a time, one per core: more concurrent TensorFlow processes and TFF workers thrash the machine.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(pool.map(run, commands))


def _ok(result):
  assert result['returncode'] == 0, result['stderr'][-3000:]
  return json.loads((result['dir'] / 'summary.json').read_text())


def _split_and_dataset(interactions_file):
  """The launcher's per_user split of the synthetic file at seed 0, rebuilt here."""
  from tff_rqfed.data import interactions, protocols

  dataset = interactions.load_interactions(interactions_file, name='synthetic')
  return protocols.make_split(dataset, protocol='per_user', seed=0), dataset


def _topk_as_indices(topk, dataset):
  """topk.csv (original ids) as dense (user indices, int[U, 10] item indices)."""
  user_index = {int(u): i for i, u in enumerate(dataset.user_ids)}
  item_index = {int(v): i for i, v in enumerate(dataset.item_ids)}
  users = np.array([user_index[u] for u in topk['user_id']])
  items = np.vectorize(item_index.get)(topk[[f'item_{r}' for r in range(1, 11)]].to_numpy())
  return users, items


def test_fedmf_run_writes_summary_with_both_metric_sets_and_communication(runs):
  from tff_rqfed.evaluation import ranking

  summary = _ok(runs['fedmf'])
  out = runs['fedmf']['dir']
  # Both metric sets are those of the written top-10 against the test split: textbook metrics
  # under 'test', the authors' metric code under 'test_paper'.
  split, dataset = _split_and_dataset(runs['fedmf']['interactions_file'])
  users, items = _topk_as_indices(pd.read_csv(out / 'topk.csv'), dataset)
  top_k = np.zeros((split.num_users, 10), np.int64)
  top_k[users] = items
  truth = ranking.truth_lists(split.test, num_users=split.num_users)
  expected = ranking.evaluate(top_k, truth, k=10)
  assert summary['test'] == pytest.approx(expected['correct'], rel=1e-12)
  assert summary['test_paper'] == pytest.approx(expected['paper'], rel=1e-12)
  assert summary['test'] != summary['test_paper']
  # The best round is the first round of highest validation NDCG@10, and its state is evaluated.
  rounds = pd.read_csv(out / 'rounds.csv')
  assert summary['rounds_run'] == len(rounds) == 4
  best = int(rounds['round'][rounds['valid_ndcg@10'].idxmax()])
  assert summary['best_round'] == best
  assert summary['valid']['ndcg@10'] == pytest.approx(rounds['valid_ndcg@10'].max(), rel=1e-12)
  assert summary['seconds_per_round'] == pytest.approx(rounds['seconds'].mean(), rel=1e-9)
  # FedMF moves the whole item table both ways: float32[40, 8].
  assert summary['communication']['upload'] == NUM_ITEMS * 8
  assert summary['communication']['download'] == NUM_ITEMS * 8
  assert summary['algorithm'] == 'fedmf' and summary['num_clients'] == 3
  from tff_rqfed import environment
  assert summary['environment']['packages']['tensorflow-federated'] == '0.87.0'
  assert summary['environment']['cpu'] == environment.cpu()
  assert summary['environment']['input_sha256'] == {}  # FedMF reads no text embeddings


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
  assert flag_values['min_rounds'] == hyperparameters.DEFAULT_MIN_ROUNDS['fedmf'] == 30
  topk = pd.read_csv(out / 'topk.csv')
  assert len(topk) == NUM_USERS  # per_user protocol: every user has test items
  assert sorted(topk['user_id']) == list(range(1, NUM_USERS + 1))
  items = topk[[f'item_{r}' for r in range(1, 11)]].to_numpy()
  assert items.min() >= 101 and items.max() <= 140  # original ids, not dense indices
  assert all(len(set(row)) == 10 for row in items)
  # Each user's training and validation items are masked out of its test ranking.
  split, dataset = _split_and_dataset(runs['fedmf']['interactions_file'])
  users, ranked = _topk_as_indices(topk, dataset)
  seen = {(u, i) for u, i in np.concatenate([split.train, split.valid]).tolist()}
  assert not any((u, i) in seen for u, row in zip(users, ranked.tolist()) for i in row)


def test_same_seed_gives_identical_test_metrics(runs):
  first, second = _ok(runs['fedmf']), _ok(runs['fedmf_again'])
  assert first['test'] == second['test']
  assert first['test_paper'] == second['test_paper']
  assert first['best_round'] == second['best_round']
  a = pd.read_csv(runs['fedmf']['dir'] / 'rounds.csv')
  b = pd.read_csv(runs['fedmf_again']['dir'] / 'rounds.csv')
  assert a['loss'].tolist() == b['loss'].tolist()


def test_two_workers_give_exactly_the_results_of_two_shards_on_one_worker(runs):
  shards, workers = _ok(runs['fedmf_two_shards']), _ok(runs['fedmf_two_workers'])
  assert workers['test'] == shards['test'] and workers['test_paper'] == shards['test_paper']
  a = pd.read_csv(runs['fedmf_two_shards']['dir'] / 'rounds.csv')
  b = pd.read_csv(runs['fedmf_two_workers']['dir'] / 'rounds.csv')
  assert a['loss'].tolist() == b['loss'].tolist()
  assert a['valid_ndcg@10'].tolist() == b['valid_ndcg@10'].tolist()
  recorded = json.loads((runs['fedmf_two_workers']['dir'] / 'flags.json').read_text())
  assert recorded['client_shards'] == 2 and recorded['workers'] == '2'  # one shard per worker
  # sharding sums the clients in another order than the one-computation mean: equal up to rounding
  one = _ok(runs['fedmf'])
  for key in METRICS:
    assert shards['test'][key] == pytest.approx(one['test'][key], abs=0.02)


def test_file_dataset_without_interactions_file_fails_naming_the_flag(runs):
  result = runs['no_file']
  assert result['returncode'] != 0
  assert '--interactions_file' in result['stderr'] + result['stdout']
  assert not (result['dir'] / 'summary.json').exists()


def test_rqfedrec_records_its_early_stop_floor_as_warmup_plus_refresh_every(runs):
  _ok(runs['rqfedrec'])
  assert json.loads((runs['rqfedrec']['dir'] / 'flags.json').read_text())['min_rounds'] == 2 + 2


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


def _wait_for(condition, *, timeout, poll=0.2):
  """Polls `condition()` until it is true or `timeout` seconds pass; returns its last value."""
  deadline = time.monotonic() + timeout
  while not (value := condition()) and time.monotonic() < deadline:
    time.sleep(poll)
  return value


def test_sigterm_writes_the_best_state_stops_the_worker_and_exits_130(tmp_path, workers_running_after):
  from tff_rqfed import execution

  interactions_file = tmp_path / 'synthetic.tsv'
  _write_interactions(interactions_file)
  output_dir = tmp_path / 'terminated'
  command = _command(output_dir, interactions_file, '--algorithm=fedmf', '--rounds=100000',
                     '--patience=100000')
  rounds_file = output_dir / 'rounds.csv'
  workers = []
  with open(tmp_path / 'stderr.txt', 'w') as stderr:
    # PYTHONFAULTHANDLER: a SIGABRT dumps every thread's stack to stderr (below, if it hangs).
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONFAULTHANDLER='1'))
  try:
    def two_rounds_written():
      if proc.poll() is not None:
        pytest.fail(f'the launcher exited with {proc.returncode} before round 2:\n'
                    + (tmp_path / 'stderr.txt').read_text()[-3000:])
      return rounds_file.exists() and len(rounds_file.read_text().splitlines()) >= 3

    assert _wait_for(two_rounds_written, timeout=240), 'rounds.csv did not reach 2 rounds in 240 s'
    workers = execution.worker_pids(parent=proc.pid)
    assert workers, 'the launcher should have started a TFF worker'
    proc.send_signal(signal.SIGTERM)
    try:
      returncode = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGABRT)
      proc.wait(timeout=30)
      pytest.fail('the launcher did not exit within 120 s of SIGTERM; its stacks:\n'
                  + (tmp_path / 'stderr.txt').read_text()[-6000:])
    assert returncode == 130, (tmp_path / 'stderr.txt').read_text()[-3000:]
  finally:
    proc.kill()
    proc.wait()
    # The worker is killed and reaped before the launcher exits; the deadline only covers teardown.
    left = workers_running_after(workers, timeout=5)
    for pid in left:  # do not leave a stray worker on the machine if the test fails
      os.kill(pid, signal.SIGKILL)
  assert left == [], f'TFF workers {left} outlived the terminated launcher'
  summary = json.loads((output_dir / 'summary.json').read_text())
  assert summary['interrupted'] is True and summary['rounds_run'] >= 2


# MostPop on ML-100k under the paper protocol (test = the first 20,000 rows of u.data, the u1 test
# set): README's 'mostpop' row, to 4 decimals.
MOSTPOP_ML100K = {
    'test': {'recall@10': 0.0975, 'mrr@10': 0.5449, 'ndcg@10': 0.3254},
    'test_paper': {'recall@10': 0.0975, 'mrr@10': 0.4739, 'ndcg@10': 0.5690},
}


def test_mostpop_on_ml100k_gives_the_readme_numbers(tmp_path):
  from tff_rqfed.data import movielens

  cache_dir = movielens.default_cache_dir()
  if not movielens._is_cached('ml-100k', movielens._paths('ml-100k', cache_dir)):
    pytest.fail(f'ml-100k is not in {cache_dir}; tests never download it: run `make data` first')
  output_dir = tmp_path / 'mostpop'
  proc = subprocess.run(
      [sys.executable, '-m', 'launchers.simulate', '--algorithm=mostpop', '--dataset=ml-100k',
       f'--output_dir={output_dir}'],
      cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((output_dir / 'summary.json').read_text())
  for block, metrics in MOSTPOP_ML100K.items():
    assert {m: round(summary[block][m], 4) for m in metrics} == metrics, block
  assert summary['algorithm'] == 'mostpop' and summary['rounds_run'] == 0
  assert summary['communication'] == {'upload': 0, 'download': 0}
  assert sorted(p.name for p in output_dir.iterdir()) == ['flags.json', 'summary.json']

"""Shared pytest set-up: quiet TensorFlow, one TFF execution context, no worker left behind, and the
planted two-community problem."""

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import pytest

from tff_rqfed import simulation
from tff_rqfed import worker_processes
from tff_rqfed.data.partition import ClientData
from tff_rqfed.data.protocols import Split
from tff_rqfed.evaluation import popularity


@pytest.fixture(scope='session')
def tff_context():
  """Installs TFF's local C++ execution context once for the tests that run computations."""
  from tff_rqfed import execution

  execution.set_execution_context()
  yield
  execution.kill_workers()


def _worker_running(pid):
  """True while `pid` is a running (not zombie) TFF worker; a reused PID is not the worker."""
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return worker_processes.alive(pid) and b'worker_binary' in f.read()
  except OSError:
    return False


def _workers_running_after(pids, *, timeout):
  """Waits up to `timeout` s for every TFF worker in `pids` to exit; returns those still running."""
  deadline = time.monotonic() + timeout
  while True:
    left = [pid for pid in pids if _worker_running(pid)]
    if not left or time.monotonic() > deadline:
      return left
    time.sleep(0.05)


@pytest.fixture(scope='session')
def workers_running_after():
  """`(pids, *, timeout) -> pids` of the TFF workers still running after waiting for them to exit."""
  return _workers_running_after


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  import sys

  if 'tff_rqfed.execution' in sys.modules:
    sys.modules['tff_rqfed.execution'].kill_workers()


# The planted two-community problem shared by the algorithm tests (FedMF, RQFedRec, the baselines)
# and the upload attack's test.
PLANTED_USERS, PLANTED_ITEMS, PLANTED_CLIENTS = 32, 40, 8


def planted_split(seed=0):
  """Users 0-15 like items 0-19, users 16-31 items 20-39: 8 train, 1 valid, 2 test positives each."""
  rng = np.random.default_rng(seed)
  train, valid, test = [], [], []
  for u in range(PLANTED_USERS):
    group = np.arange(20) + (0 if u < PLANTED_USERS // 2 else 20)
    chosen = rng.choice(group, size=11, replace=False)
    train += [(u, i) for i in chosen[:8]]
    valid += [(u, chosen[8])]
    test += [(u, i) for i in chosen[9:]]
  as_array = lambda pairs: np.asarray(pairs, np.int32)
  return Split(as_array(train), as_array(valid), as_array(test), PLANTED_USERS, PLANTED_ITEMS)


def clients_of(split):
  per_client = PLANTED_USERS // PLANTED_CLIENTS
  clients = []
  for k in range(PLANTED_CLIENTS):
    users = np.arange(k * per_client, (k + 1) * per_client, dtype=np.int32)
    rows = np.isin(split.train[:, 0], users)
    clients.append(ClientData(user_ids=users, local_users=(split.train[rows, 0] - users[0]).astype(np.int32),
                              items=split.train[rows, 1].astype(np.int32)))
  return clients


@pytest.fixture(scope='session')
def planted_problem():
  """(split, clients): 32 users in 8 clients of 4, two communities of 20 items."""
  split = planted_split()
  return split, clients_of(split)


def planted_text_embeddings(seed=0):
  """float32[40, 16]: item text embeddings in two semantic communities matching the planted ones."""
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(2, 16))
  return (means[np.arange(PLANTED_ITEMS) // 20] + 0.3 * rng.normal(size=(PLANTED_ITEMS, 16))).astype(np.float32)


@pytest.fixture(scope='session')
def planted_text():
  """`planted_text_embeddings()`: the text embeddings of the planted problem's items."""
  return planted_text_embeddings()


@pytest.fixture(scope='session')
def assert_learned_the_communities():
  """A check that `scores: float32[U, I]` give test recall@10 well above MostPop and random ranking."""
  return _assert_learned_the_communities


def _assert_learned_the_communities(scores, split):
  trained, _ = simulation.evaluate_scores(scores, split, k=10, on='test')
  random_scores = np.random.default_rng(1).normal(size=scores.shape)
  random, _ = simulation.evaluate_scores(random_scores, split, k=10, on='test')
  popular_scores = popularity.most_popular_scores(split.train, num_users=PLANTED_USERS, num_items=PLANTED_ITEMS)
  popular, _ = simulation.evaluate_scores(popular_scores, split, k=10, on='test')
  # Random ranking of 31 candidates with 2 positives: recall@10 ~ 10/31, and both communities are
  # equally popular, so MostPop is near it; the planted structure leaves 11 in-community candidates,
  # so a model that learned it gets ~10/11.
  assert random['correct']['recall@10'] < 0.45 and popular['correct']['recall@10'] < 0.5
  assert trained['correct']['recall@10'] > 0.7
  for baseline in (random, popular):
    assert trained['correct']['ndcg@10'] > baseline['correct']['ndcg@10'] + 0.2

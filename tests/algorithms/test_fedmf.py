"""Short FedMF and mf_local runs on a planted two-community problem (Sec. 3.2, Table 2)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed import simulation
from tff_rqfed.algorithms import fedmf, mf_local
from tff_rqfed.data.partition import ClientData
from tff_rqfed.data.protocols import Split
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib

NUM_USERS, NUM_ITEMS, NUM_CLIENTS, D = 32, 40, 8, 8


def planted_split(seed=0):
  """Users 0-15 like items 0-19, users 16-31 items 20-39: 8 train, 1 valid, 2 test positives each."""
  rng = np.random.default_rng(seed)
  train, valid, test = [], [], []
  for u in range(NUM_USERS):
    group = np.arange(20) + (0 if u < NUM_USERS // 2 else 20)
    chosen = rng.choice(group, size=11, replace=False)
    train += [(u, i) for i in chosen[:8]]
    valid += [(u, chosen[8])]
    test += [(u, i) for i in chosen[9:]]
  as_array = lambda pairs: np.asarray(pairs, np.int32)
  return Split(as_array(train), as_array(valid), as_array(test), NUM_USERS, NUM_ITEMS)


def clients_of(split):
  per_client = NUM_USERS // NUM_CLIENTS
  clients = []
  for k in range(NUM_CLIENTS):
    users = np.arange(k * per_client, (k + 1) * per_client, dtype=np.int32)
    rows = np.isin(split.train[:, 0], users)
    clients.append(ClientData(user_ids=users, local_users=(split.train[rows, 0] - users[0]).astype(np.int32),
                              items=split.train[rows, 1].astype(np.int32)))
  return clients


TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


def run(process, clients, rounds, seed=0):
  state = process.initialize()
  client_states = process.initial_client_states(clients)
  history = []
  for t in range(1, rounds + 1):
    data = process_lib.client_data_values(clients, seed=seed, round_num=t)
    state, client_states, metrics = process.next(state, client_states, data, round_num=t)
    history.append(metrics)
  return state, client_states, history


@pytest.fixture(scope='module')
def problem():
  split = planted_split()
  return split, clients_of(split)


@pytest.fixture(scope='module')
def fedmf_run(tff_context, problem):
  split, clients = problem
  process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=0)
  return process, run(process, clients, rounds=15)


def test_fedmf_lowers_training_loss_and_beats_random_ranking(problem, fedmf_run):
  split, clients = problem
  process, (state, client_states, history) = fedmf_run
  losses = [m['loss'] for m in history]
  assert losses[0] == pytest.approx(np.log(2), abs=0.05)
  assert losses[-1] < 0.75 * losses[0]
  scores = process.scores(state, client_states, clients, NUM_USERS)
  trained, _ = simulation.evaluate_scores(scores, split, k=10, on='test')
  random_scores = np.random.default_rng(1).normal(size=scores.shape)
  baseline, _ = simulation.evaluate_scores(random_scores, split, k=10, on='test')
  # Random ranking of 31 candidates with 2 positives: recall@10 ~ 10/31; the planted structure
  # leaves 11 in-community candidates, so a model that learned it gets ~10/11.
  assert baseline['correct']['recall@10'] < 0.45
  assert trained['correct']['recall@10'] > 0.7
  assert trained['correct']['ndcg@10'] > baseline['correct']['ndcg@10'] + 0.2


def test_fedmf_item_table_is_the_server_state_and_all_clients_share_it(problem, fedmf_run):
  _, clients = problem
  process, (state, client_states, _) = fedmf_run
  items = np.asarray(state['item_embeddings'])
  assert items.shape == (NUM_ITEMS, D)
  assert int(state['round_num']) == 15
  assert [np.asarray(s).shape for s in client_states] == [(4, D)] * NUM_CLIENTS


def test_fedmf_same_seed_gives_identical_metrics(tff_context, problem):
  _, clients = problem
  results = []
  for _ in range(2):
    process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=3)
    state, client_states, history = run(process, clients, rounds=2, seed=3)
    results.append((np.asarray(state['item_embeddings']), history))
  np.testing.assert_array_equal(results[0][0], results[1][0])
  assert results[0][1] == results[1][1]
  process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=4)
  state, _, history = run(process, clients, rounds=2, seed=4)
  assert history != results[0][1]


def test_mf_local_runs_and_each_client_keeps_its_own_item_table(tff_context, problem):
  _, clients = problem
  process = mf_local.build_mf_local(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING)
  state, client_states, history = run(process, clients, rounds=2)
  assert int(state['round_num']) == 0  # nothing is aggregated or updated on the server
  assert all(np.isfinite(m['loss']) for m in history)
  tables = [np.asarray(s['item_embeddings']) for s in client_states]
  assert all(t.shape == (NUM_ITEMS, D) for t in tables)
  for a in range(NUM_CLIENTS):
    for b in range(a + 1, NUM_CLIENTS):
      assert not np.array_equal(tables[a], tables[b])
  # A client's table only moved on items it trained: items of the other community are mostly
  # untouched by client 0 (users 0-3, items 0-19) except for sampled negatives.
  initial = cw.initial_item_embeddings(NUM_ITEMS, embedding_dim=D, init_scale=0.1, seed=0)
  moved = np.any(tables[0] != initial, axis=1)
  assert moved[np.unique(clients[0].items)].all()
  assert process.communication['upload'] == 0

"""Short FedMF and mf_local runs on a planted two-community problem (Sec. 3.2, Table 2)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.algorithms import fedmf, mf_local
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib

NUM_USERS, NUM_ITEMS, NUM_CLIENTS, D = 32, 40, 8, 8  # the planted problem of conftest.py


TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


@pytest.fixture(scope='module')
def fedmf_run(tff_context, planted_problem):
  split, clients = planted_problem
  process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=0)
  return process, process.run(clients, rounds=15)


def test_fedmf_lowers_training_loss_and_beats_popularity_and_random_ranking(
    planted_problem, fedmf_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = fedmf_run
  losses = [m['loss'] for m in history]
  assert losses[0] == pytest.approx(np.log(2), abs=0.05)
  assert losses[-1] < 0.75 * losses[0]
  scores = process.scores(state, client_states, clients, NUM_USERS)
  assert_learned_the_communities(scores, split)


def test_fedmf_server_state_is_the_weighted_mean_of_the_tables_its_clients_trained_from_it(
    planted_problem, fedmf_run):
  # Every client starts from the broadcast server table and the next state is the |D_k|-weighted
  # mean of the tables they upload (Eq. 4): computed here client by client, outside the round.
  _, clients = planted_problem
  process, (state, client_states, _) = fedmf_run
  data = process_lib.client_data_values(clients, seed=0, round_num=16)
  payload = process.payload(state)
  np.testing.assert_array_equal(np.asarray(payload), np.asarray(state['item_embeddings']))
  outputs = [process.client_work(payload, c, x) for c, x in zip(client_states, data)]
  weights = np.array([float(o.weight) for o in outputs])
  np.testing.assert_array_equal(weights, [len(c.items) for c in clients])
  expected = np.average(np.stack([np.asarray(o.upload) for o in outputs]), axis=0, weights=weights)
  next_state, next_client_states, _ = process.next(state, client_states, data, round_num=16)
  np.testing.assert_allclose(np.asarray(next_state['item_embeddings']), expected, rtol=1e-5, atol=1e-7)
  assert int(next_state['round_num']) == int(state['round_num']) + 1 == 16
  for output, client_state in zip(outputs, next_client_states):
    np.testing.assert_allclose(np.asarray(client_state), np.asarray(output.client_state), rtol=1e-6)


def test_fedmf_same_seed_gives_identical_metrics(tff_context, planted_problem):
  _, clients = planted_problem
  results = []
  for _ in range(2):
    process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=3)
    state, client_states, history = process.run(clients, rounds=2, seed=3)
    results.append((np.asarray(state['item_embeddings']), history))
  np.testing.assert_array_equal(results[0][0], results[1][0])
  assert results[0][1] == results[1][1]
  process = fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=4)
  state, _, history = process.run(clients, rounds=2, seed=4)
  assert history != results[0][1]


def test_mf_local_runs_and_each_client_keeps_its_own_item_table(tff_context, planted_problem):
  _, clients = planted_problem
  process = mf_local.build_mf_local(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING)
  state, client_states, history = process.run(clients, rounds=2)
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

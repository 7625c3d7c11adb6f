"""FedNCF (federated NeuMF) on the planted two-community problem."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import fedncf
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import ncf

NUM_USERS, NUM_ITEMS, D = 32, 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


@pytest.fixture(scope='module')
def fedncf_run(tff_context, planted_problem):
  _, clients = planted_problem
  process = fedncf.build_fedncf(num_items=NUM_ITEMS, embedding_dim=D, hidden_units=(8, 4),
                                training=TRAINING, seed=0)
  return process, process.run(clients, rounds=15)


def test_fedncf_lowers_training_loss_and_beats_popularity_and_random_ranking(
    planted_problem, fedncf_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = fedncf_run
  assert history[-1]['loss'] < 0.75 * history[0]['loss']
  scores = process.scores(state, client_states, clients, NUM_USERS)
  assert scores.shape == (NUM_USERS, NUM_ITEMS)
  assert_learned_the_communities(scores, split)


def test_fedncf_server_state_is_the_weighted_mean_of_every_shared_parameter(planted_problem, fedncf_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedncf_run
  data = process_lib.client_data_values(clients, seed=0, round_num=16)
  payload = process.payload(state)
  outputs = [process.client_work(payload, c, x) for c, x in zip(client_states, data)]
  weights = np.array([float(o.weight) for o in outputs])
  next_state, _, _ = process.next(state, client_states, data, round_num=16)
  expected_items = np.average([np.asarray(o.upload['items']) for o in outputs], axis=0, weights=weights)
  np.testing.assert_allclose(np.asarray(next_state['shared']['items']), expected_items, rtol=1e-5,
                             atol=1e-7)
  for k in range(len(ncf.dense_shapes(D, (8, 4)))):
    expected = np.average([np.asarray(o.upload['dense'][k]) for o in outputs], axis=0, weights=weights)
    np.testing.assert_allclose(np.asarray(next_state['shared']['dense'][k]), expected, rtol=1e-5,
                               atol=1e-6)
  # Private user tables (GMF ; MLP) stay on the clients, one row per user.
  assert [np.asarray(s).shape for s in client_states] == [(len(c.user_ids), 2 * D) for c in clients]


def test_fedncf_scores_are_the_neumf_logits_of_each_users_own_embedding(planted_problem, fedncf_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedncf_run
  scores = process.scores(state, client_states, clients, NUM_USERS)
  user = 5  # client 1, local row 1
  shared = state['shared']
  row = ncf.logits(np.repeat(np.asarray(client_states[1])[1:2], NUM_ITEMS, axis=0),
                   np.asarray(shared['items']), [tf.constant(np.asarray(w)) for w in shared['dense']])
  np.testing.assert_allclose(scores[user], row.numpy(), rtol=1e-5, atol=1e-5)


def test_fedncf_communication_counts_both_item_tables_and_the_dense_layers():
  process = fedncf.build_fedncf(num_items=NUM_ITEMS, embedding_dim=D, hidden_units=(8, 4))
  dense = sum(int(np.prod(s)) for s in ncf.dense_shapes(D, (8, 4)))
  assert dense == 16 * 8 + 8 + 8 * 4 + 4 + 12 + 1
  assert process.communication['upload'] == process.communication['download'] == 2 * NUM_ITEMS * D + dense


@pytest.mark.parametrize('hidden', [(), (8, 0)])
def test_build_fedncf_rejects_an_empty_or_zero_width_tower(hidden):
  with pytest.raises(ValueError, match='hidden_units'):
    fedncf.build_fedncf(num_items=NUM_ITEMS, embedding_dim=D, hidden_units=hidden)

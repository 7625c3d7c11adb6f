"""PFedRec (Zhang et al., IJCAI 2023) on the planted two-community problem, and its round against a
NumPy reference of the alternating score-function / item steps."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import pfedrec
from tff_rqfed.data.partition import ClientData
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import mf

NUM_USERS, NUM_ITEMS, D = 32, 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


def client_by_client(process, state, client_states, data):
  """Each client's output from the round's broadcast, computed outside the federated round."""
  payload = process.payload(state)
  return [process.client_work(payload, c, x) for c, x in zip(client_states, data)]


def unequal_clients(split):
  """The planted users in 8 clients of 1 to 9 users (8 positives each), so |D_k| differ."""
  sizes = [1, 2, 3, 4, 9, 5, 6, 2]
  bounds = np.cumsum([0] + sizes)
  clients = []
  for k in range(len(sizes)):
    users = np.arange(bounds[k], bounds[k + 1], dtype=np.int32)
    rows = np.isin(split.train[:, 0], users)
    local_users = (split.train[rows, 0] - users[0]).astype(np.int32)
    clients.append(ClientData(user_ids=users, local_users=local_users,
                              items=split.train[rows, 1].astype(np.int32)))
  return clients


@pytest.fixture(scope='module')
def pfedrec_run(tff_context, planted_problem):
  _, clients = planted_problem
  process = pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=0)
  return process, process.run(clients, rounds=15)


def test_pfedrec_lowers_training_loss_and_learns_the_communities(
    planted_problem, pfedrec_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = pfedrec_run
  losses = [m['loss'] for m in history]
  assert losses[0] < np.log(2) and losses[-1] < 0.5 * losses[0]
  scores = process.scores(state, client_states, clients, NUM_USERS)
  assert scores.shape == (NUM_USERS, NUM_ITEMS)
  assert_learned_the_communities(scores, split)


def test_pfedrec_server_table_is_the_unweighted_mean_of_the_uploads(tff_context, planted_problem):
  split, _ = planted_problem
  clients = unequal_clients(split)
  process = pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=0)
  state, client_states, _ = process.run(clients, rounds=1)
  data = process_lib.client_data_values(clients, seed=0, round_num=2)
  outputs = client_by_client(process, state, client_states, data)
  uploads = np.stack([np.asarray(o.upload) for o in outputs])
  weights = np.array([float(o.weight) for o in outputs])
  np.testing.assert_array_equal(weights, [len(c.items) for c in clients])
  next_state, next_client_states, _ = process.next(state, client_states, data, round_num=2)
  unweighted, weighted = uploads.mean(axis=0), np.average(uploads, axis=0, weights=weights)
  assert np.abs(unweighted - weighted).max() > 1e-2  # the two means are told apart
  np.testing.assert_allclose(np.asarray(next_state['item_embeddings']), unweighted, rtol=1e-5, atol=1e-7)
  assert int(next_state['round_num']) == 2
  # Each client keeps what it trained: its score functions and its users' logits with the table it
  # uploaded.
  for output, client_state, client in zip(outputs, next_client_states, clients):
    score_functions = np.asarray(client_state['score_functions'])
    assert score_functions.shape == (len(client.user_ids), D + 1)
    with_upload = score_functions[:, :D] @ np.asarray(output.upload).T + score_functions[:, D:]
    np.testing.assert_allclose(np.asarray(client_state['item_logits']), with_upload, rtol=1e-5, atol=1e-6)


def test_pfedrec_scores_each_user_with_its_own_clients_fine_tuned_table(tff_context, planted_problem,
                                                                        pfedrec_run):
  _, clients = planted_problem
  process, (state, client_states, _) = pfedrec_run
  # Client 5 (users 20-23) fine-tunes the broadcast of round 16; user 21 is then scored with that table.
  k, row, user = 5, 1, 21
  data = process_lib.client_data_values(clients, seed=0, round_num=16)[k]
  out = process.client_work(process.payload(state), client_states[k], data)
  states = list(client_states)
  states[k] = out.client_state
  scores = process.scores(state, states, clients, NUM_USERS)
  score_function = np.asarray(out.client_state['score_functions'])[row]
  w, b = score_function[:D], score_function[D]
  own = np.asarray(out.upload) @ w + b
  np.testing.assert_allclose(scores[user], own, rtol=1e-5, atol=1e-6)
  with_server_table = np.asarray(state['item_embeddings']) @ w + b
  assert np.abs(scores[user] - with_server_table).max() > 1e-2


def test_pfedrec_client_state_keeps_the_users_logits_not_the_item_table(pfedrec_run):
  # One user per client at d = 512 on ML-100k: 1,682 logits instead of 1,682 x 512 table values.
  process, (_, client_states, _) = pfedrec_run
  assert set(client_states[0]) == {'score_functions', 'item_logits'}
  state_type = process.client_work.type_signature.parameter[1]
  assert tuple(state_type.item_logits.shape) == (None, NUM_ITEMS)
  assert not hasattr(state_type, 'item_embeddings')
  assert np.asarray(client_states[0]['item_logits']).shape == (4, NUM_ITEMS)


def test_pfedrec_round_starts_from_the_broadcast_not_the_stored_logits(planted_problem, pfedrec_run):
  _, clients = planted_problem
  process, (state, client_states, _) = pfedrec_run
  data = process_lib.client_data_values(clients, seed=0, round_num=16)[2]
  payload = process.payload(state)
  stored = client_states[2]
  garbage = collections.OrderedDict(
      score_functions=stored['score_functions'],
      item_logits=np.random.default_rng(0).normal(size=(4, NUM_ITEMS)).astype(np.float32))
  a, b = process.client_work(payload, stored, data), process.client_work(payload, garbage, data)
  np.testing.assert_array_equal(np.asarray(a.upload), np.asarray(b.upload))
  np.testing.assert_array_equal(np.asarray(a.client_state['score_functions']),
                                np.asarray(b.client_state['score_functions']))
  # ... and the broadcast does matter.
  other = process.client_work(np.asarray(payload) + 0.1, stored, data)
  assert not np.allclose(np.asarray(other.upload), np.asarray(a.upload))


def test_pfedrec_client_without_positives_returns_the_broadcast_unchanged(pfedrec_run):
  process, (state, client_states, _) = pfedrec_run
  data = collections.OrderedDict(local_users=np.zeros(0, np.int32), items=np.zeros(0, np.int32),
                                 seed=np.array([0, 1], np.int32), client_index=np.int32(0),
                                 excluded_items=np.zeros(0, np.int32))
  out = process.client_work(process.payload(state), client_states[0], data)
  np.testing.assert_array_equal(np.asarray(out.upload), np.asarray(state['item_embeddings']))
  np.testing.assert_array_equal(np.asarray(out.client_state['score_functions']),
                                np.asarray(client_states[0]['score_functions']))
  assert float(out.weight) == 0.0 and float(out.metrics['loss']) == 0.0


# --- A NumPy reference of a client's round -------------------------------------------------------


def lazy_adam(table, m, v, rows, row_grads, *, t, learning_rate, weight_decay):
  """In place: Adam on the rows `rows` of `table` only (repeated rows summed), global step t."""
  unique, inverse = np.unique(rows, return_inverse=True)
  g = np.zeros((len(unique), table.shape[1]))
  np.add.at(g, inverse, row_grads)
  g += weight_decay * table[unique]
  m[unique] = 0.9 * m[unique] + 0.1 * g
  v[unique] = 0.999 * v[unique] + 0.001 * g**2
  m_hat, v_hat = m[unique] / (1 - 0.9**t), v[unique] / (1 - 0.999**t)
  table[unique] -= learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def reference_round(score_functions, items, users, batch_items, labels, *, batch_size, epoch_size,
                    learning_rate, item_learning_rate, weight_decay, alternate=True):
  """(score_functions, items, mean loss) after PFedRec's local steps, in float64 NumPy.

  Per batch: an Adam step on the users' score functions (items fixed), then the logits recomputed
  with the new score functions and an Adam step on the items. `alternate=False` is the wrong
  simultaneous update (both gradients from the same forward pass).
  """
  s, q = score_functions.astype(np.float64), items.astype(np.float64)
  moments = [np.zeros_like(s), np.zeros_like(s), np.zeros_like(q), np.zeros_like(q)]
  d, t, losses = q.shape[1], 0, []
  for epoch_start in range(0, len(users), epoch_size):
    for start in range(epoch_start, epoch_start + epoch_size, batch_size):
      sl = slice(start, min(start + batch_size, epoch_start + epoch_size))
      u, i, y = users[sl], batch_items[sl], labels[sl]
      t += 1
      old_s = s.copy()
      error = (sigmoid(np.sum(s[u, :d] * q[i], 1) + s[u, d]) - y) / len(y)
      score_grads = np.concatenate([error[:, None] * q[i], error[:, None]], axis=1)
      lazy_adam(s, *moments[:2], u, score_grads, t=t, learning_rate=learning_rate,
                weight_decay=weight_decay)
      w = s if alternate else old_s
      z = np.sum(w[u, :d] * q[i], 1) + w[u, d]
      losses.append(np.mean(np.logaddexp(0, z) - y * z))
      lazy_adam(q, *moments[2:], i, ((sigmoid(z) - y) / len(y))[:, None] * w[u, :d], t=t,
                learning_rate=item_learning_rate, weight_decay=weight_decay)
  return s, q, np.mean(losses)


@pytest.mark.parametrize('batch_size, epochs', [(1000, 1), (16, 2)])
def test_pfedrec_client_round_equals_a_numpy_reference_of_the_alternating_steps(
    tff_context, planted_problem, batch_size, epochs):
  # One batch (the whole client), and 10 batches per epoch over 2 epochs; weight decay and an item
  # learning-rate scale so every option is wired.
  _, clients = planted_problem
  client = clients[3]
  training = cw.LocalTraining(epochs=epochs, batch_size=batch_size, num_negatives=4,
                              learning_rate=0.05, weight_decay=0.01)
  process = pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=training,
                                  init_scale=0.5, seed=1, item_learning_rate_scale=3.0)
  state, client_state = process.initialize(), process.initial_client_states([client])[0]
  client_state['score_functions'][:, D] = np.linspace(-0.3, 0.3, len(client.user_ids))  # nonzero bias
  data = process_lib.client_data_values([client], seed=5, round_num=1)[0]
  out = process.client_work(process.payload(state), client_state, data)

  mask = np.zeros((len(client.user_ids), NUM_ITEMS), bool)
  mask[client.local_users, client.items] = True
  drawn = [mf.epoch_examples(tf.constant(client.local_users), tf.constant(client.items),
                             tf.constant(mask), epoch=e, seed=tf.constant(data['seed']),
                             num_negatives=4) for e in range(epochs)]
  users, items, labels = (np.concatenate([e[k].numpy() for e in drawn]) for k in range(3))
  kwargs = dict(batch_size=batch_size, epoch_size=len(client.items) * 5, learning_rate=0.05,
                item_learning_rate=0.15, weight_decay=0.01)
  s, q, loss = reference_round(client_state['score_functions'], np.asarray(state['item_embeddings']),
                               users, items, labels, **kwargs)
  np.testing.assert_allclose(np.asarray(out.client_state['score_functions']), s, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.upload), q, rtol=1e-4, atol=1e-5)
  assert float(out.metrics['loss']) == pytest.approx(loss, rel=1e-4)
  # Items no example touched keep the broadcast values exactly (two epochs touch every item).
  untouched = np.setdiff1d(np.arange(NUM_ITEMS), items)
  assert len(untouched) > 0 or epochs > 1
  np.testing.assert_array_equal(np.asarray(out.upload)[untouched],
                                np.asarray(state['item_embeddings'])[untouched])
  # The simultaneous update (item gradient at the old score functions) is told apart.
  _, q_simultaneous, _ = reference_round(
      client_state['score_functions'], np.asarray(state['item_embeddings']), users, items, labels,
      alternate=False, **kwargs)
  assert np.abs(q_simultaneous - q).max() > 1e-3


def test_pfedrec_same_seed_gives_identical_results(tff_context, planted_problem):
  _, clients = planted_problem
  results = []
  for seed in (3, 3, 4):
    process = pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=seed)
    state, client_states, history = process.run(clients, rounds=2, seed=seed)
    results.append((np.asarray(state['item_embeddings']),
                    process.scores(state, client_states, clients, NUM_USERS), history))
  np.testing.assert_array_equal(results[0][0], results[1][0])
  np.testing.assert_array_equal(results[0][1], results[1][1])
  assert results[0][2] == results[1][2]
  assert results[2][2] != results[0][2]
  assert not np.array_equal(results[2][1], results[0][1])


def test_pfedrec_initial_score_functions_do_not_depend_on_the_partition():
  one = ClientData(user_ids=np.array([5], np.int32), local_users=np.zeros(0, np.int32),
                   items=np.zeros(0, np.int32))
  block = ClientData(user_ids=np.arange(4, 8, dtype=np.int32), local_users=np.zeros(0, np.int32),
                     items=np.zeros(0, np.int32))
  a, b = cw.initial_score_functions([one, block], embedding_dim=D, init_scale=0.1, seed=0)
  assert a.shape == (1, D + 1) and b.shape == (4, D + 1)
  np.testing.assert_array_equal(a[0], b[1])
  assert np.all(a[:, D] == 0) and a[0, :D].std() > 0.03
  assert not np.array_equal(b[0], b[1])


def test_pfedrec_communicates_the_item_table_both_ways():
  process = pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D)
  assert process.communication['upload'] == process.communication['download'] == NUM_ITEMS * D


@pytest.mark.parametrize('option, value', [
    ('num_items', 0), ('embedding_dim', 0), ('init_scale', 0.0), ('init_scale', float('nan')),
    ('item_learning_rate_scale', -1.0), ('item_learning_rate_scale', float('inf')),
    ('training', {'learning_rate': 0.01})])
def test_build_pfedrec_rejects_bad_options_quoting_the_value(option, value):
  kwargs = dict(num_items=NUM_ITEMS, embedding_dim=D)
  kwargs[option] = value
  with pytest.raises(ValueError, match=f'{option}.*{re.escape(repr(value))}'):
    pfedrec.build_pfedrec(**kwargs)

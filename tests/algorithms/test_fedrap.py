"""FedRAP (additive personalisation) on the planted two-community problem, and its objective."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import fedrap
from tff_rqfed.data.partition import ClientData
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import fedrap_model

NUM_USERS, NUM_ITEMS, D = 32, 40, 8  # the planted problem of conftest.py
# FedRAP's private D memorises each client's items as mf_local's table does, so on this problem it
# sits between mf_local and FedMF (with D frozen at 0 it reaches FedMF's recall@10 of ~0.94). With
# FedMF's test options (learning rate 0.05, init scale 0.1) its test NDCG@10 peaks near 0.43, at the
# fixture's bar (MostPop/random + 0.2 = 0.434); with 0.01 and 0.01 (the launcher's FedMF scale) it is
# 0.45-0.47 from round 15 to 30 (seeds 0 and 1), recall@10 0.73-0.78.
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.01)
INIT_SCALE = 0.01
ROUNDS = 20


def build(**options):
  options = {'num_items': NUM_ITEMS, 'embedding_dim': D, 'training': TRAINING,
             'init_scale': INIT_SCALE, **options}
  return fedrap.build_fedrap(**options)


@pytest.fixture(scope='module')
def fedrap_run(tff_context, planted_problem):
  _, clients = planted_problem
  process = build(seed=0)
  return process, process.run(clients, rounds=ROUNDS)


def test_fedrap_lowers_training_loss_and_beats_popularity_and_random_ranking(
    planted_problem, fedrap_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = fedrap_run
  # Round 0 of the tanh schedule has zero regulariser weights: the objective is the BCE alone.
  assert history[0]['loss'] == history[0]['bce'] == pytest.approx(np.log(2), abs=0.05)
  assert history[-1]['loss'] != history[-1]['bce']
  assert history[-1]['bce'] < 0.75 * history[0]['bce']
  assert int(state['round_num']) == ROUNDS
  scores = process.scores(state, client_states, clients, NUM_USERS)
  assert scores.shape == (NUM_USERS, NUM_ITEMS)
  assert_learned_the_communities(scores, split)


def _unequal_clients(split):
  """Three clients of 1, 3 and 8 users (8, 24 and 64 positives), so weighted and plain means differ."""
  clients = []
  for users in (np.array([0]), np.arange(1, 4), np.arange(16, 24)):
    rows = np.isin(split.train[:, 0], users)
    clients.append(ClientData(
        user_ids=users.astype(np.int32),
        local_users=np.searchsorted(users, split.train[rows, 0]).astype(np.int32),
        items=split.train[rows, 1].astype(np.int32)))
  return clients


def test_fedrap_server_commonality_is_the_unweighted_mean_of_the_uploaded_tables(
    tff_context, planted_problem):
  split, _ = planted_problem
  clients = _unequal_clients(split)
  process = build(schedule='fixed')
  state, client_states, _ = process.run(clients, rounds=1)
  data = process_lib.client_data_values(clients, seed=0, round_num=2)
  payload = process.payload(state)
  outputs = [process.client_work(payload, c, x) for c, x in zip(client_states, data)]
  uploads = np.stack([np.asarray(o.upload) for o in outputs])
  weights = np.array([float(o.weight) for o in outputs])
  np.testing.assert_array_equal(weights, [8, 24, 64])
  next_state, next_client_states, _ = process.next(state, client_states, data, round_num=2)
  got = np.asarray(next_state['item_commonality'])
  np.testing.assert_allclose(got, uploads.mean(axis=0), rtol=1e-5, atol=1e-7)
  weighted = np.average(uploads, axis=0, weights=weights)
  assert np.abs(got - weighted).max() > 100 * np.abs(got - uploads.mean(axis=0)).max()
  assert np.abs(got - weighted).max() > 1e-3
  assert int(next_state['round_num']) == 2
  for output, client_state in zip(outputs, next_client_states):
    for key in ('score_functions', 'personal_items'):
      np.testing.assert_allclose(np.asarray(client_state[key]), np.asarray(output.client_state[key]),
                                 rtol=1e-6)


def test_fedrap_keeps_d_and_the_score_functions_on_the_client_and_uploads_only_c(
    planted_problem, fedrap_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedrap_run
  assert sorted(dict(state)) == ['aggregator', 'item_commonality', 'round_num']
  assert str(process.upload_type) == f'float32[{NUM_ITEMS},{D}]'
  data = process_lib.client_data_values(clients, seed=0, round_num=ROUNDS + 1)
  payload = process.payload(state)
  common = np.asarray(state['item_commonality'])
  np.testing.assert_array_equal(np.asarray(payload['item_commonality']), common)
  for k in (0, 5):
    output = process.client_work(payload, client_states[k], data[k])
    before, after = client_states[k], output.client_state
    upload = np.asarray(output.upload)
    assert upload.shape == (NUM_ITEMS, D)
    assert np.asarray(after['score_functions']).shape == (len(clients[k].user_ids), D + 1)
    positives = np.unique(clients[k].items)
    for key in ('personal_items', 'score_functions'):  # private tables trained on the client
      assert not np.allclose(np.asarray(after[key]), np.asarray(before[key]))
    personal = np.asarray(after['personal_items'])
    assert np.all(np.any(personal[positives] != np.asarray(before['personal_items'])[positives], axis=1))
    assert np.all(np.any(upload[positives] != common[positives], axis=1))  # its copy of C trained
    assert not np.allclose(upload, personal) and not np.allclose(upload, personal + common)
    # The upload is the client's trained copy of C, nothing else: the same local step in plain TF.
    _, want_personal, want_common, _, _ = fedrap_model.train_local(
        before['score_functions'], before['personal_items'], common, data[k]['local_users'],
        data[k]['items'], data[k]['seed'], lam=payload['lam'], mu=payload['mu'],
        epochs=TRAINING.epochs, batch_size=TRAINING.batch_size,
        num_negatives=TRAINING.num_negatives, learning_rate=TRAINING.learning_rate)
    np.testing.assert_allclose(upload, want_common.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(personal, want_personal.numpy(), rtol=1e-5, atol=1e-6)
  # Clients' D differ (each its own), and no client's D is C.
  tables = [np.asarray(s['personal_items']) for s in client_states]
  assert not np.allclose(tables[0], tables[1]) and not np.allclose(tables[0], common)


def test_fedrap_scores_are_each_users_score_function_on_its_clients_d_plus_the_global_c(
    planted_problem, fedrap_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedrap_run
  scores = process.scores(state, client_states, clients, NUM_USERS)
  user, k, row = 5, 1, 1  # client 1 holds users 4-7
  assert clients[k].user_ids[row] == user
  score_function = np.asarray(client_states[k]['score_functions'])[row]
  items = np.asarray(client_states[k]['personal_items']) + np.asarray(state['item_commonality'])
  want = items @ score_function[:D] + score_function[D]
  np.testing.assert_allclose(scores[user], want, rtol=1e-5, atol=1e-6)
  assert score_function[D] != 0.0  # the bias was trained
  # Another client's D would give other scores.
  other = np.asarray(client_states[0]['personal_items']) + np.asarray(state['item_commonality'])
  assert not np.allclose(scores[user], other @ score_function[:D] + score_function[D], atol=1e-3)


def test_part_scores_split_fedraps_score_into_its_global_and_personal_tables(planted_problem, fedrap_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedrap_run
  parts = fedrap.part_scores(state, client_states, clients, NUM_USERS)
  assert tuple(parts) == fedrap.PARTS
  np.testing.assert_allclose(parts['personal + global'],
                             process.scores(state, client_states, clients, NUM_USERS), rtol=1e-5, atol=1e-5)
  user, k, row = 5, 1, 1
  score_function = np.asarray(client_states[k]['score_functions'])[row]
  common = np.asarray(state['item_commonality'])
  np.testing.assert_allclose(parts['global'][user], common @ score_function[:D] + score_function[D],
                             rtol=1e-5, atol=1e-6)
  biases = np.concatenate([np.asarray(s['score_functions'])[:, -1] for s in client_states])
  np.testing.assert_allclose(parts['global'] + parts['personal'] - biases[:, None],
                             parts['personal + global'], rtol=1e-5, atol=1e-5)


def test_mean_magnitudes_are_the_mean_absolute_values_of_c_and_of_the_clients_d(fedrap_run):
  _, (state, client_states, _) = fedrap_run
  got = fedrap.mean_magnitudes(state, client_states)
  assert got['global'] == pytest.approx(np.abs(np.asarray(state['item_commonality'])).mean())
  assert got['personal'] == pytest.approx(np.mean(
      [np.abs(np.asarray(s['personal_items'])).mean() for s in client_states]))
  assert got['personal'] > 0 and got['global'] > 0


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_objective_is_bce_minus_lambda_mse_plus_mu_l1_with_torch_mean_reductions():
  rng = np.random.default_rng(0)
  b, d, lam, mu = 3, 4, 0.3, 0.7
  labels = np.array([1.0, 0.0, 1.0], np.float32)
  w = rng.normal(size=(b, d + 1)).astype(np.float32)
  p = rng.normal(size=(b, d)).astype(np.float32)
  c = rng.normal(size=(b, d)).astype(np.float32)
  pred = _sigmoid(np.sum(w[:, :d] * (p + c), axis=1) + w[:, d])
  bce = -np.mean(labels * np.log(pred) + (1 - labels) * np.log(1 - pred))
  want = bce - lam * np.mean((p - c) ** 2) + mu * np.mean(np.abs(c))
  tensors = [tf.constant(x) for x in (w, p, c)]
  with tf.GradientTape() as tape:
    tape.watch(tensors)
    loss, got_bce = fedrap_model.objective(tf.constant(labels), *tensors, lam=lam, mu=mu)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(got_bce), bce, rtol=1e-5)
  grad_w, grad_p, grad_c = (g.numpy() for g in tape.gradient(loss, tensors))
  err = ((pred - labels) / b)[:, None]
  np.testing.assert_allclose(grad_w, np.concatenate([err * (p + c), err], axis=1), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(grad_p, err * w[:, :d] - lam * 2 * (p - c) / (b * d), rtol=1e-4,
                             atol=1e-6)
  # The L1 term's gradient is mu sign(C) / (B d): torch's L1Loss mean over the batch's rows.
  np.testing.assert_allclose(
      grad_c, err * w[:, :d] + lam * 2 * (p - c) / (b * d) + mu * np.sign(c) / (b * d), rtol=1e-4,
      atol=1e-6)


@pytest.mark.parametrize('round_num', [0, 1, 5, 30])
def test_regulariser_weights_follow_tanh_of_the_round_or_stay_fixed(tff_context, round_num):
  common = np.ones((NUM_ITEMS, D), np.float32)
  state = collections.OrderedDict(item_commonality=common, round_num=np.int32(round_num))
  tanh = build(lam=0.2, mu=0.5, schedule='tanh').server_payload(state)
  fixed = build(lam=0.2, mu=0.5, schedule='fixed').server_payload(state)
  factor = np.tanh(round_num / 10)
  assert float(tanh['lam']) == pytest.approx(0.2 * factor, rel=1e-6, abs=1e-9)
  assert float(tanh['mu']) == pytest.approx(0.5 * factor, rel=1e-6, abs=1e-9)
  assert float(fixed['lam']) == pytest.approx(0.2) and float(fixed['mu']) == pytest.approx(0.5)
  np.testing.assert_array_equal(np.asarray(tanh['item_commonality']), common)


def _initial_tables():
  """(score_functions, D, C) of one client of 2 users, fixed."""
  rng = np.random.default_rng(0)
  return (rng.normal(0, 0.1, (2, D + 1)).astype(np.float32),
          rng.normal(0, 0.1, (NUM_ITEMS, D)).astype(np.float32),
          rng.normal(0, 0.1, (NUM_ITEMS, D)).astype(np.float32))


def _train_one_client(lam, mu, **options):
  """(D, C) after local training of one client of 2 users from `_initial_tables`."""
  scores, personal, common = _initial_tables()
  local_users = np.array([0, 0, 0, 1, 1, 1], np.int32)
  items = np.array([1, 2, 3, 2, 5, 7], np.int32)
  _, personal, common, _, _ = fedrap_model.train_local(
      scores, personal, common, local_users, items, np.array([0, 1], np.int32),
      lam=tf.constant(lam), mu=tf.constant(mu), epochs=5, batch_size=8, num_negatives=2,
      learning_rate=0.05, **options)
  return personal.numpy(), common.numpy(), np.unique(items)


def test_personal_lr_scale_zero_freezes_d_and_a_smaller_scale_moves_it_less_while_c_trains():
  _, start_d, start_c = _initial_tables()
  base_d, base_c, positives = _train_one_client(0.1, 0.1)
  frozen_d, frozen_c, _ = _train_one_client(0.1, 0.1, personal_lr_scale=0.0)
  slow_d, _, _ = _train_one_client(0.1, 0.1, personal_lr_scale=0.1)
  np.testing.assert_array_equal(frozen_d, start_d)
  moved = lambda table, start: np.abs(table[positives] - start[positives]).mean()
  assert moved(frozen_c, start_c) > 0.5 * moved(base_c, start_c)
  assert 0 < moved(slow_d, start_d) < 0.3 * moved(base_d, start_d)


def test_local_training_pushes_d_away_from_c_with_lambda_and_shrinks_c_with_mu():
  base_d, base_c, positives = _train_one_client(0.0, 0.0)
  apart_d, apart_c, _ = _train_one_client(10.0, 0.0)
  sparse_d, sparse_c, _ = _train_one_client(0.0, 10.0)
  distance = lambda p, c: np.abs(p[positives] - c[positives]).mean()
  assert distance(apart_d, apart_c) > 2 * distance(base_d, base_c)
  assert np.abs(sparse_c[positives]).mean() < 0.5 * np.abs(base_c[positives]).mean()


def test_fedrap_same_seed_gives_identical_results(tff_context, planted_problem):
  _, clients = planted_problem
  results = []
  for seed in (3, 3, 4):
    state, client_states, history = build(seed=seed).run(clients, rounds=2, seed=seed)
    results.append((np.asarray(state['item_commonality']),
                    np.asarray(client_states[2]['personal_items']),
                    np.asarray(client_states[2]['score_functions']), history))
  for a, b in zip(results[0][:3], results[1][:3]):
    np.testing.assert_array_equal(a, b)
  assert results[0][3] == results[1][3]
  assert results[2][3] != results[0][3]
  assert not np.array_equal(results[2][0], results[0][0])


def test_initial_client_states_draw_each_users_weight_from_its_own_stream(tff_context, planted_problem):
  _, clients = planted_problem
  process = build(seed=0)
  states = process.initial_client_states(clients)
  one = process.initial_client_states([ClientData(np.array([5], np.int32), np.zeros(0, np.int32),
                                                  np.zeros(0, np.int32))])[0]
  np.testing.assert_array_equal(one['score_functions'][0], states[1]['score_functions'][1])
  assert np.all(states[1]['score_functions'][:, D] == 0.0)  # biases start at 0
  c = np.asarray(process.initialize()['item_commonality'])
  assert not np.allclose(states[0]['personal_items'], c)
  assert not np.allclose(states[0]['personal_items'], states[1]['personal_items'])


def test_fedrap_communication_is_the_commonality_table_each_way():
  communication = build().communication
  assert communication['upload'] == communication['download'] == NUM_ITEMS * D
  assert communication['download_scalars'] == 2  # this round's lambda and mu


@pytest.mark.parametrize('options, message', [
    (dict(lam=-0.1), 'lam must be a finite number >= 0, got -0.1'),
    (dict(mu=-1.0), 'mu must be a finite number >= 0, got -1.0'),
    (dict(mu=float('inf')), 'mu must be a finite number >= 0, got inf'),
    (dict(schedule='cosine'), "unknown schedule 'cosine'"),
    (dict(personal_lr_scale=-0.5), 'personal_lr_scale must be a finite number >= 0, got -0.5'),
    (dict(personal_lr_scale=float('nan')), 'personal_lr_scale must be a finite number >= 0, got nan'),
])
def test_build_fedrap_rejects_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    build(**options)

"""Tests for tff_rqfed.models.mf: row-sparse Adam, negative sampling and the local MF step (Eq. 1, 3)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.models import mf


def _numpy_adam_rows(table, m, v, rows, grads, *, step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
  """Reference Adam step on the touched rows with repeated rows summed and L2 decay in the gradient."""
  table, m, v = table.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
  summed = {}
  for r, g in zip(rows, grads):
    summed[int(r)] = summed.get(int(r), 0.0) + g.astype(np.float64)
  for r, g in summed.items():
    g = g + wd * table[r]
    m[r] = b1 * m[r] + (1 - b1) * g
    v[r] = b2 * v[r] + (1 - b2) * g * g
    m_hat = m[r] / (1 - b1**step)
    v_hat = v[r] / (1 - b2**step)
    table[r] = table[r] - lr * m_hat / (np.sqrt(v_hat) + eps)
  return table, m, v


def test_row_sparse_adam_matches_numpy_adam_with_weight_decay_and_summed_repeats():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(6, 3)).astype(np.float32)
  m = rng.normal(scale=0.1, size=(6, 3)).astype(np.float32)
  v = rng.uniform(0.01, 0.2, size=(6, 3)).astype(np.float32)
  rows = np.array([1, 3, 1, 4, 1], np.int32)  # row 1 three times
  grads = rng.normal(size=(5, 3)).astype(np.float32)

  new_table, new_m, new_v = mf.row_sparse_adam(
      table, m, v, rows, grads, step=tf.constant(3.0), learning_rate=0.1, weight_decay=0.05
  )
  want_table, want_m, want_v = _numpy_adam_rows(
      table, m, v, rows, grads, step=3, lr=0.1, wd=0.05
  )
  np.testing.assert_allclose(new_table.numpy(), want_table, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_m.numpy(), want_m, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new_v.numpy(), want_v, rtol=1e-5, atol=1e-7)


def test_row_sparse_adam_sums_gradients_of_repeated_rows():
  table = np.zeros((3, 2), np.float32)
  zeros = np.zeros((3, 2), np.float32)
  g = np.array([[1.0, -2.0]], np.float32)
  # Row 2 given the gradient g twice must equal row 2 given 2 g once.
  twice = mf.row_sparse_adam(table, zeros, zeros, np.array([2, 2], np.int32), np.concatenate([g, g]),
                             step=tf.constant(1.0), learning_rate=0.1, weight_decay=0.0)
  once = mf.row_sparse_adam(table, zeros, zeros, np.array([2], np.int32), 2 * g,
                            step=tf.constant(1.0), learning_rate=0.1, weight_decay=0.0)
  for a, b in zip(twice, once):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
  # First moment of row 2 is (1 - beta_1) * 2 g = 0.1 * [2, -4].
  np.testing.assert_allclose(twice[1].numpy()[2], [0.2, -0.4], rtol=1e-6)


def test_row_sparse_adam_leaves_untouched_rows_and_their_moments_unchanged():
  rng = np.random.default_rng(1)
  table = rng.normal(size=(5, 4)).astype(np.float32)
  m = rng.normal(size=(5, 4)).astype(np.float32)
  v = rng.uniform(0.1, 1.0, size=(5, 4)).astype(np.float32)
  rows = np.array([0, 3], np.int32)
  new_table, new_m, new_v = mf.row_sparse_adam(
      table, m, v, rows, rng.normal(size=(2, 4)).astype(np.float32),
      step=tf.constant(7.0), learning_rate=0.01, weight_decay=0.1,
  )
  untouched = [1, 2, 4]
  np.testing.assert_array_equal(new_table.numpy()[untouched], table[untouched])
  np.testing.assert_array_equal(new_m.numpy()[untouched], m[untouched])
  np.testing.assert_array_equal(new_v.numpy()[untouched], v[untouched])
  assert not np.array_equal(new_table.numpy()[rows], table[rows])


def _draw(mask, local_users, num_negatives, seed):
  return mf.sample_negatives(np.asarray(local_users, np.int32), mask, num_negatives=num_negatives,
                             seed=tf.constant(seed)).numpy()


def test_sample_negatives_never_returns_a_positive_of_sparse_or_dense_users():
  # Users with 7%, 50% and 95% of the items as positives: a sampler that redraws a hit a few times
  # returns positives of the dense users (0.95^5 = 77% of the time after 4 redraws).
  num_items = 40
  mask = np.zeros((3, num_items), bool)
  mask[0, [0, 1, 39]] = True
  mask[1, ::2] = True
  mask[2, :38] = True
  local_users = np.array([0, 0, 1, 1, 2], np.int32)
  users = np.repeat(local_users, 50)
  for s in range(10):
    negatives = _draw(mask, local_users, 50, [s, 3 * s + 1])
    assert negatives.shape == (250,) and negatives.dtype == np.int32
    assert not mask[users, negatives].any(), f'seed {s}: a positive was returned as a negative'
  assert set(negatives[users == 2]) == {38, 39}


def test_sample_negatives_is_uniform_over_the_users_non_positives():
  # 4 non-positives among 10 items; 40,000 draws: each count within 5 binomial standard deviations
  # of 10,000 (a sampler biased towards the first or last non-positive, or towards items after a run
  # of positives, fails).
  mask = np.ones((2, 10), bool)
  mask[1, [0, 3, 4, 9]] = False
  negatives = _draw(mask, [1], 40_000, [5, 6])
  counts = np.bincount(negatives, minlength=10)
  assert set(np.flatnonzero(counts)) == {0, 3, 4, 9}
  sd = np.sqrt(40_000 * 0.25 * 0.75)
  assert np.all(np.abs(counts[[0, 3, 4, 9]] - 10_000) < 5 * sd), counts


def test_sample_negatives_draws_each_users_own_complement_in_a_multi_user_client():
  rng = np.random.default_rng(0)
  mask = rng.random((6, 30)) < rng.random((6, 1))  # users from sparse to dense
  mask[:, 0] = False  # everyone has a non-positive
  local_users = np.arange(6, dtype=np.int32)
  negatives = _draw(mask, local_users, 2_000, [1, 2]).reshape(6, 2_000)
  for user in range(6):
    assert set(negatives[user]) == set(np.flatnonzero(~mask[user])), user


def test_sample_negatives_refuses_a_user_with_every_item_positive():
  mask = np.ones((2, 5), bool)
  mask[1, 2] = False
  with pytest.raises(tf.errors.InvalidArgumentError, match='every item as a training positive'):
    _draw(mask, [0, 1], 3, [0, 1])


def test_every_random_draw_of_a_client_round_has_its_own_seed(monkeypatch):
  # Negatives and shuffle of every epoch, and RQFedRec's Laplace noise: one seed each, so no two draws
  # share a stream (the redraws and the shuffle once used the same seed).
  from tff_rqfed import random_streams
  from tff_rqfed.federated import privacy

  seeds = []
  real = tf.random.stateless_uniform

  def recording(shape, seed, *args, **kwargs):
    seeds.append(tuple(np.asarray(seed).tolist()))
    return real(shape, seed, *args, **kwargs)

  monkeypatch.setattr(tf.random, 'stateless_uniform', recording)
  _train([4, 9], epochs=3)
  assert len(seeds) == 6
  privacy.laplace_noise([3], scale=0.1, seed=random_streams.stream_seed(
      tf.constant([4, 9]), random_streams.LAPLACE_NOISE))
  assert len(seeds) == 7 and len(set(seeds)) == 7, seeds


def _planted_problem():
  """4 users, 12 items: users 0, 1 like items 0-5, users 2, 3 like items 6-11 (4 positives each)."""
  local_users, items = [], []
  for u in range(4):
    group = range(0, 6) if u < 2 else range(6, 12)
    chosen = list(group)[u % 2: u % 2 + 4]
    local_users += [u] * 4
    items += chosen
  return np.array(local_users, np.int32), np.array(items, np.int32)


def _full_bce(users, params, local_users, items):
  """Balanced BCE over every (user, item): mean over positives + mean over non-positives."""
  logits = users @ params.T
  labels = np.zeros_like(logits)
  labels[local_users, items] = 1.0
  loss = np.logaddexp(0.0, logits) - labels * logits
  return loss[labels == 1].mean() + loss[labels == 0].mean()


def _train(seed, epochs=10):
  rng = np.random.default_rng(5)
  users0 = rng.normal(scale=0.1, size=(4, 4)).astype(np.float32)
  params0 = rng.normal(scale=0.1, size=(12, 4)).astype(np.float32)
  rows, coef = mf.identity_parameterisation(12)
  local_users, items = _planted_problem()
  out = mf.train_local(
      users0, params0, rows, coef, local_users, items, tf.constant(seed, tf.int32),
      epochs=epochs, batch_size=16, num_negatives=2, learning_rate=0.1, weight_decay=0.0,
  )
  return (users0, params0, local_users, items), [t.numpy() for t in out]


def test_train_local_lowers_bce_and_marks_every_positive_as_trained():
  (users0, params0, local_users, items), (users, params, mean_loss, trained) = _train([1, 2])
  before = _full_bce(users0, params0, local_users, items)
  after = _full_bce(users, params, local_users, items)
  assert before == pytest.approx(2 * np.log(2), abs=0.05)  # near-zero logits at init
  assert after < 0.5 * before
  assert 0.0 < mean_loss < np.log(2) + 0.05
  assert trained.dtype == bool and trained.shape == (12,)
  assert trained[items].all()
  assert users.shape == (4, 4) and params.shape == (12, 4)


def test_train_local_is_deterministic_for_a_seed_and_depends_on_it():
  _, first = _train([4, 9], epochs=2)
  _, second = _train([4, 9], epochs=2)
  _, other = _train([5, 9], epochs=2)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[1], other[1])


def test_train_local_only_updates_items_in_trained_items():
  rng = np.random.default_rng(2)
  params0 = rng.normal(size=(40, 3)).astype(np.float32)
  rows, coef = mf.identity_parameterisation(40)
  _, params, _, trained = mf.train_local(
      rng.normal(size=(1, 3)).astype(np.float32), params0, rows, coef,
      np.zeros(2, np.int32), np.array([3, 17], np.int32), tf.constant([0, 1]),
      epochs=1, batch_size=4, num_negatives=1, learning_rate=0.1, weight_decay=0.0,
  )
  params, trained = params.numpy(), trained.numpy()
  assert trained[[3, 17]].all()
  assert 2 <= trained.sum() <= 4  # two positives and at most two negatives
  np.testing.assert_array_equal(params[~trained], params0[~trained])
  assert not np.array_equal(params[[3, 17]], params0[[3, 17]])


def _numpy_train_local(users, params, rows, coef, examples, *, batch_size, lr, wd):
  """Reference of train_local: lazy Adam over the given epochs' examples, one batch at a time."""
  users, params = users.astype(np.float64), params.astype(np.float64)
  um, uv = np.zeros_like(users), np.zeros_like(users)
  pm, pv = np.zeros_like(params), np.zeros_like(params)
  step, losses = 0, []
  for epoch_users, epoch_items, epoch_labels in examples:
    for start in range(0, len(epoch_items), batch_size):
      bu = epoch_users[start:start + batch_size]
      bi = epoch_items[start:start + batch_size]
      by = epoch_labels[start:start + batch_size]
      b_rows, b_coef = rows[bi], coef[bi]  # [B, R]
      vec = np.einsum('br,brd->bd', b_coef, params[b_rows])
      logits = np.sum(users[bu] * vec, axis=1)
      losses.append(np.mean(np.logaddexp(0.0, logits) - by * logits))
      dlogit = (1.0 / (1.0 + np.exp(-logits)) - by) / len(bi)
      grad_u = dlogit[:, None] * vec
      grad_p = (dlogit[:, None, None] * b_coef[:, :, None] * users[bu][:, None, :]).reshape(-1, users.shape[1])
      step += 1
      users, um, uv = _numpy_adam_rows(users, um, uv, bu, grad_u, step=step, lr=lr, wd=wd)
      params, pm, pv = _numpy_adam_rows(params, pm, pv, b_rows.reshape(-1), grad_p, step=step, lr=lr, wd=wd)
  return users, params, np.mean(losses)


@pytest.mark.parametrize('parameterisation', ['id_table', 'two_rows_per_item'])
def test_train_local_equals_a_numpy_reference_of_lazy_adam_over_the_same_examples(parameterisation):
  rng = np.random.default_rng(11)
  num_items, d = 30, 5
  if parameterisation == 'id_table':
    rows, coef = (t.numpy() for t in mf.identity_parameterisation(num_items))
    num_params = num_items
  else:  # like the codebooks: each item sums two shared rows with its own coefficients
    num_params = 12
    rows = np.stack([rng.integers(0, 6, num_items), rng.integers(6, 12, num_items)], 1).astype(np.int32)
    coef = rng.uniform(0.2, 1.0, (num_items, 2)).astype(np.float32)
  users0 = rng.normal(scale=0.3, size=(3, d)).astype(np.float32)
  params0 = rng.normal(scale=0.3, size=(num_params, d)).astype(np.float32)
  local_users = rng.integers(0, 3, 14).astype(np.int32)
  items = rng.integers(0, num_items, 14).astype(np.int32)
  seed = tf.constant([4, 2])
  options = dict(batch_size=8, num_negatives=2, learning_rate=0.05, weight_decay=1e-3)
  users, params, loss, trained = mf.train_local(
      users0, params0, rows, coef, local_users, items, seed, epochs=2, **options)

  mask = np.zeros((3, num_items), bool)
  mask[local_users, items] = True
  examples = [[t.numpy() for t in mf.epoch_examples(local_users, items, mask, epoch=e, seed=seed,
                                                      num_negatives=2)] for e in range(2)]
  want_users, want_params, want_loss = _numpy_train_local(
      users0, params0, rows, coef, examples, batch_size=8, lr=0.05, wd=1e-3)
  np.testing.assert_allclose(users.numpy(), want_users, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(params.numpy(), want_params, rtol=1e-4, atol=1e-5)
  assert float(loss) == pytest.approx(want_loss, rel=1e-4)
  np.testing.assert_array_equal(trained.numpy(), np.isin(np.arange(num_items),
                                                          np.concatenate([e[1] for e in examples])))


def test_train_local_never_writes_into_its_inputs_eagerly_or_in_a_tf_function():
  rng = np.random.default_rng(12)
  users0 = rng.normal(size=(2, 4)).astype(np.float32)
  params0 = rng.normal(size=(20, 4)).astype(np.float32)
  rows, coef = mf.identity_parameterisation(20)
  local_users, items = np.array([0, 1, 1], np.int32), np.array([2, 5, 7], np.int32)
  users_t, params_t = tf.constant(users0), tf.constant(params0)
  run = lambda u, p: mf.train_local(u, p, rows, coef, local_users, items, tf.constant([1, 2]),
                                    epochs=2, batch_size=4, num_negatives=1, learning_rate=0.1,
                                    weight_decay=0.0)
  eager = run(users_t, params_t)
  graph = tf.function(run)(users_t, params_t)
  np.testing.assert_array_equal(users_t.numpy(), users0)
  np.testing.assert_array_equal(params_t.numpy(), params0)
  for a, b in zip(eager, graph):  # Grappler may reorder float ops in the tf.function: ulp noise
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
  assert not np.array_equal(eager[1].numpy(), params0)


def _round_items(excluded):
  users = tf.constant([0, 0, 1, 1, 1], tf.int32)
  positives = tf.constant([1, 2, 3, 4, 5], tf.int32)
  examples = mf.round_examples(users, positives, num_users=2, num_items=12, epochs=3, batch_size=8,
                               num_negatives=4, seed=tf.constant([5, 9], tf.int32),
                               excluded_items=excluded)
  return examples.items.numpy(), examples.labels.numpy()


def test_excluded_items_are_never_drawn_as_negatives():
  items, labels = _round_items(tf.constant([0, 7, 8, 9, 10, 11], tf.int32))
  negatives = items[labels == 0]
  assert len(negatives) == 3 * 5 * 4 and not set(negatives.tolist()) & {0, 7, 8, 9, 10, 11}
  # Without the exclusion those items are drawn (the test would catch a no-op exclusion).
  items, labels = _round_items(None)
  assert set(items[labels == 0].tolist()) & {0, 7, 8, 9, 10, 11}


def test_an_empty_exclusion_draws_exactly_what_no_exclusion_draws():
  with_empty = _round_items(tf.zeros([0], tf.int32))
  without = _round_items(None)
  np.testing.assert_array_equal(with_empty[0], without[0])
  np.testing.assert_array_equal(with_empty[1], without[1])


def _train_with_offsets(params0, offsets, epochs=3):
  rng = np.random.default_rng(5)
  users0 = rng.normal(scale=0.1, size=(4, 4)).astype(np.float32)
  rows, coef = mf.identity_parameterisation(12)
  local_users, items = _planted_problem()
  out = mf.train_local(
      users0, params0, rows, coef, local_users, items, tf.constant([3, 1], tf.int32),
      epochs=epochs, batch_size=16, num_negatives=2, learning_rate=0.1, weight_decay=0.0,
      item_offsets=None if offsets is None else tf.constant(offsets))
  return [t.numpy() for t in out]


def test_zero_item_offsets_over_a_full_width_table_train_exactly_as_without_offsets():
  params0 = np.random.default_rng(6).normal(scale=0.1, size=(12, 4)).astype(np.float32)
  plain = _train_with_offsets(params0, None)
  offset = _train_with_offsets(params0, np.zeros((12, 4), np.float32))
  for a, b in zip(plain, offset):
    np.testing.assert_array_equal(a, b)


def test_item_offsets_score_items_as_offset_plus_the_last_n_coordinates_and_train_only_those():
  # items = frozen offsets (width d = 4) + a trained table of width n = 1 on the last coordinate:
  # the narrow table keeps its width and its untouched rows, and the fused items fit the positives
  rng = np.random.default_rng(7)
  offsets = rng.normal(scale=0.1, size=(12, 4)).astype(np.float32)
  narrow0 = rng.normal(scale=0.1, size=(12, 1)).astype(np.float32)
  users, narrow, loss, trained = _train_with_offsets(narrow0, offsets)
  assert narrow.shape == (12, 1) and not np.array_equal(narrow[trained], narrow0[trained])
  np.testing.assert_array_equal(narrow[~trained], narrow0[~trained])
  local_users, items = _planted_problem()
  full = offsets.copy()
  full[:, 3:] += narrow
  before = offsets.copy()
  before[:, 3:] += narrow0
  rng = np.random.default_rng(5)
  users0 = rng.normal(scale=0.1, size=(4, 4)).astype(np.float32)
  assert _full_bce(users, full, local_users, items) < _full_bce(users0, before, local_users, items)
  assert np.isfinite(loss)

"""Tests for tff_rqfed.models.ncf: NeuMF logits, dense Adam and the local NeuMF step."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.models import mf
from tff_rqfed.models import ncf

D, HIDDEN = 3, (4, 2)


def _numpy_neumf(user, item, weights):
  gmf = user[:D] * item[:D]
  hidden = np.concatenate([user[D:], item[D:]])
  for layer in range(len(HIDDEN)):
    hidden = np.maximum(hidden @ weights[2 * layer] + weights[2 * layer + 1], 0.0)
  return float(np.concatenate([gmf, hidden]) @ weights[-2][:, 0] + weights[-1][0])


def test_dense_shapes_are_the_tower_then_the_output_layer_over_gmf_and_the_last_hidden_layer():
  assert ncf.dense_shapes(D, HIDDEN) == [(6, 4), (4,), (4, 2), (2,), (5, 1), (1,)]


def test_initial_dense_weights_follow_torch_linear_bounds_and_the_seed():
  weights = ncf.initial_dense_weights(D, HIDDEN, seed=1)
  assert [w.shape for w in weights] == ncf.dense_shapes(D, HIDDEN)
  for kernel, bias in zip(weights[::2], weights[1::2]):
    bound = 1 / np.sqrt(kernel.shape[0])
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(kernel).max() > 0.5 * bound
  np.testing.assert_array_equal(weights[0], ncf.initial_dense_weights(D, HIDDEN, seed=1)[0])
  assert not np.array_equal(weights[0], ncf.initial_dense_weights(D, HIDDEN, seed=2)[0])


def test_logits_equal_a_numpy_neumf_with_separate_gmf_and_mlp_halves():
  rng = np.random.default_rng(0)
  weights = [w + rng.normal(size=w.shape).astype(np.float32)
             for w in ncf.initial_dense_weights(D, HIDDEN, seed=0)]
  users = rng.normal(size=(5, 2 * D)).astype(np.float32)
  items = rng.normal(size=(5, 2 * D)).astype(np.float32)
  got = ncf.logits(users, items, [tf.constant(w) for w in weights]).numpy()
  want = [_numpy_neumf(u, i, weights) for u, i in zip(users, items)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dense_adam_matches_the_adam_update_with_weight_decay():
  w, g = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32)
  (new,), (m,), (v,) = ncf.dense_adam([w], [np.zeros(2, np.float32)], [np.zeros(2, np.float32)], [g],
                                      step=1.0, learning_rate=0.1, weight_decay=0.1)
  grad = g + 0.1 * w
  m_want, v_want = 0.1 * grad, 0.001 * grad ** 2
  np.testing.assert_allclose(m, m_want, rtol=1e-6)
  np.testing.assert_allclose(v, v_want, rtol=1e-6)
  # First step of Adam moves every weight by lr against its gradient's sign.
  np.testing.assert_allclose(new, w - 0.1 * np.sign(grad), rtol=1e-4)


def test_train_local_lowers_the_loss_moves_only_touched_items_and_is_seeded():
  rng = np.random.default_rng(3)
  users = rng.normal(scale=0.1, size=(4, 2 * D)).astype(np.float32)
  items = rng.normal(scale=0.1, size=(40, 2 * D)).astype(np.float32)
  weights = ncf.initial_dense_weights(D, HIDDEN, seed=0)
  local_users = np.repeat(np.arange(4, dtype=np.int32), 3)
  positives = np.array([0, 1, 2, 0, 1, 3, 10, 11, 12, 10, 11, 13], np.int32)

  def train(seed, epochs):
    out = ncf.train_local(users, items, [tf.constant(w) for w in weights], local_users, positives,
                          tf.constant(seed), epochs=epochs, batch_size=8, num_negatives=2,
                          learning_rate=0.05)
    return [np.asarray(t) for t in out[:2]], [w.numpy() for w in out[2]], float(out[3])

  (_, _), _, short_loss = train([0, 1], 1)
  (new_users, new_items), new_weights, long_loss = train([0, 1], 30)
  assert long_loss < short_loss - 0.05
  assert not np.allclose(new_users, users)
  assert all(not np.array_equal(a, b) for a, b in zip(new_weights, weights))
  # Exactly the items of some example (the positives and one epoch's sampled negatives) move.
  (_, few_items), _, _ = train([0, 1], 1)
  mask = np.zeros((4, 40), bool)
  mask[local_users, positives] = True
  touched = set()
  for epoch in range(1):
    _, drawn, _ = mf.epoch_examples(local_users, positives, mask, epoch=epoch, seed=tf.constant([0, 1]),
                                    num_negatives=2)
    touched |= set(drawn.numpy().tolist())
  assert set(np.flatnonzero(np.any(few_items != items, axis=1))) == touched
  assert len(touched) < 40
  again = train([0, 1], 30)
  np.testing.assert_array_equal(again[0][1], new_items)
  assert not np.array_equal(train([5, 1], 30)[0][1], new_items)

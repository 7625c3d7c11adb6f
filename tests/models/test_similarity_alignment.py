"""Tests for tff_rqfed.models.similarity_alignment: FedCIA's alignment steps in spectral coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.models import similarity_alignment as sa

I, D = 12, 4


def _problem(seed=0, noise=0.05):
  rng = np.random.default_rng(seed)
  items = rng.normal(0, 0.5, (I, D)).astype(np.float32)
  others = rng.normal(0, 0.5, (3, I, D))
  similarity = np.mean([o @ o.T for o in others], axis=0) + rng.laplace(0, noise, (I, I))
  return items, similarity.astype(np.float32)


def _literal_steps(items, similarity, *, steps, learning_rate, weight_decay):
  """The released code's loop in float64: torch.norm(E E^T - S) and SGD with weight decay."""
  e = tf.Variable(items.astype(np.float64))
  s = tf.constant(similarity.astype(np.float64))
  loss = None
  for _ in range(steps):
    with tf.GradientTape() as tape:
      loss = tf.norm(tf.matmul(e, e, transpose_b=True) - s)
    gradient = tape.gradient(loss, e) + weight_decay * e
    e.assign_sub(learning_rate * gradient)
  return e.numpy(), float(loss)


def test_similarity_is_not_symmetric_in_the_test_problem():
  _, similarity = _problem()
  assert np.abs(similarity - similarity.T).max() > 0.01


@pytest.mark.parametrize('steps,learning_rate,weight_decay', [(1, 0.1, 0.0), (25, 0.05, 1e-3)])
def test_align_takes_the_same_steps_as_sgd_on_the_literal_frobenius_loss(steps, learning_rate,
                                                                         weight_decay):
  items, similarity = _problem()
  want, want_loss = _literal_steps(items, similarity, steps=steps, learning_rate=learning_rate,
                                   weight_decay=weight_decay)
  got, got_loss = sa.align(items, sa.spectral_target(similarity), steps=steps,
                           learning_rate=learning_rate, weight_decay=weight_decay)
  assert np.abs(want - items).max() > 0.01  # the steps moved the table
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
  assert float(got_loss) == pytest.approx(want_loss, rel=1e-4)


def test_align_lowers_the_distance_to_the_target_similarity():
  items, similarity = _problem(seed=1)
  before = np.linalg.norm(items @ items.T - similarity)
  aligned, _ = sa.align(items, sa.spectral_target(similarity), steps=50, learning_rate=0.02,
                        weight_decay=0.0)
  after = np.linalg.norm(aligned.numpy() @ aligned.numpy().T - similarity)
  assert after < 0.7 * before


def test_spectral_target_rebuilds_the_symmetric_part_and_measures_the_antisymmetric_part():
  _, similarity = _problem()
  target = sa.spectral_target(similarity)
  v, lam = target.eigenvectors.numpy(), target.eigenvalues.numpy()
  np.testing.assert_allclose(v @ np.diag(lam) @ v.T, (similarity + similarity.T) / 2, atol=1e-5)
  np.testing.assert_allclose(v.T @ v, np.eye(I), atol=1e-5)
  anti = (similarity - similarity.T) / 2
  assert float(target.antisymmetric_sq_norm) == pytest.approx(np.sum(anti**2), rel=1e-5)


def test_zero_steps_return_the_table_unchanged_and_negative_steps_are_refused():
  items, similarity = _problem()
  target = sa.spectral_target(similarity)
  got, loss = sa.align(items, target, steps=0, learning_rate=0.1, weight_decay=0.0)
  np.testing.assert_array_equal(got.numpy(), items)
  assert float(loss) == 0.0
  with pytest.raises(ValueError, match='steps must be >= 0, got -1'):
    sa.align(items, target, steps=-1, learning_rate=0.1, weight_decay=0.0)


def test_align_runs_in_a_tf_function_with_unknown_row_count():
  items, similarity = _problem()
  target = sa.spectral_target(similarity)

  @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32)])
  def aligned(table):
    return sa.align(table, target, steps=3, learning_rate=0.1, weight_decay=0.0)[0]

  want, _ = sa.align(items, target, steps=3, learning_rate=0.1, weight_decay=0.0)
  np.testing.assert_allclose(aligned(items).numpy(), want.numpy(), rtol=1e-6, atol=1e-6)

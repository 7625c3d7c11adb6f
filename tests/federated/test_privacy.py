"""Tests for tff_rqfed.federated.privacy: the stateless Laplace noise of Eq. 11."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.federated import privacy


def test_laplace_noise_is_reproducible_for_a_seed_and_changes_with_it():
  a = privacy.laplace_noise([64, 8], scale=0.5, seed=tf.constant([3, 4])).numpy()
  b = privacy.laplace_noise([64, 8], scale=0.5, seed=tf.constant([3, 4])).numpy()
  c = privacy.laplace_noise([64, 8], scale=0.5, seed=tf.constant([3, 5])).numpy()
  assert a.shape == (64, 8) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_laplace_noise_has_zero_mean_and_mean_absolute_value_equal_to_scale():
  scale = 0.7
  x = privacy.laplace_noise([100_000], scale=scale, seed=tf.constant([11, 12])).numpy().astype(np.float64)
  # Lap(0, b): mean 0, E|x| = b, Var = 2 b^2; standard errors here are ~0.003 and ~0.002.
  assert abs(x.mean()) < 0.015
  assert np.abs(x).mean() == pytest.approx(scale, rel=0.02)
  assert x.var() == pytest.approx(2 * scale**2, rel=0.05)
  assert np.isfinite(x).all()


def test_laplace_noise_with_zero_scale_is_zero():
  x = privacy.laplace_noise([10], scale=0.0, seed=tf.constant([0, 1])).numpy()
  np.testing.assert_array_equal(np.abs(x), np.zeros(10, np.float32))


def test_laplace_noise_rejects_a_negative_scale():
  with pytest.raises(ValueError, match='-0.5'):
    privacy.laplace_noise([3], scale=-0.5, seed=tf.constant([0, 1]))

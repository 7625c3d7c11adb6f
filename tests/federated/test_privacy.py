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


def test_clip_rows_l1_scales_only_the_rows_above_the_bound():
  table = tf.constant([[3.0, -4.0], [0.5, 0.25], [0.0, 0.0]])
  clipped, fraction = privacy.clip_rows_l1(table, 2.0)
  np.testing.assert_allclose(clipped.numpy(), [[6 / 7, -8 / 7], [0.5, 0.25], [0.0, 0.0]], rtol=1e-6)
  assert float(fraction) == pytest.approx(1 / 3)


def test_perturb_item_table_clips_then_adds_the_seeded_noise():
  table = tf.fill([5, 4], 2.0)  # L1 norm 8 per row
  seed = tf.constant([1, 2])
  out, fraction = privacy.perturb_item_table(table, scale=0.1, clip=4.0, seed=seed)
  noise = privacy.laplace_noise([5, 4], scale=0.1, seed=seed)
  np.testing.assert_allclose(out.numpy(), 1.0 + noise.numpy(), rtol=1e-6)
  assert float(fraction) == 1.0
  unclipped, fraction = privacy.perturb_item_table(table, scale=0.1, clip=0.0, seed=seed)
  np.testing.assert_allclose(unclipped.numpy(), 2.0 + noise.numpy(), rtol=1e-6)
  assert float(fraction) == 0.0


def test_epsilon_is_sensitivity_over_scale_per_round_and_composes_over_rounds():
  one = privacy.laplace_epsilon(scale=0.08, clip=0.4, rounds=1)
  assert one['epsilon_per_round'] == pytest.approx(10.0)  # 2 * 0.4 / 0.08
  # (10, 0)-DP is also (10, 1e-5)-DP; the RDP accountant's conversion loses less than 0.1% of it.
  assert 10.0 <= one['epsilon_over_run'] <= 10.01
  many = privacy.laplace_epsilon(scale=0.08, clip=0.4, rounds=40)
  assert 10.0 < many['epsilon_over_run'] <= 400.0  # at most basic composition
  small = privacy.laplace_epsilon(scale=1.0, clip=0.05, rounds=100)  # 0.1 per round
  assert small['epsilon_over_run'] < 0.5 * 100 * 0.1  # RDP well below basic composition there
  assert privacy.laplace_epsilon(scale=0.08, clip=0.0, rounds=3)['epsilon_over_run'] == float('inf')
  assert privacy.laplace_epsilon(scale=0.0, clip=1.0, rounds=3)['epsilon_per_round'] == float('inf')

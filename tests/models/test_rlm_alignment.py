"""RLMRec's alignment terms (models/rlm_alignment.py) against their formulas written out in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.models import rlm_alignment


def _cos(a, b):
  a = a / np.sqrt(1e-8 + (a ** 2).sum(-1, keepdims=True))
  b = b / np.sqrt(1e-8 + (b ** 2).sum(-1, keepdims=True))
  return a @ b.T


def test_infonce_sum_is_the_official_formula():
  rng = np.random.default_rng(0)
  x, y, all_y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
  t = 0.2
  expected = sum(-_cos(x[b:b + 1], y[b:b + 1])[0, 0] / t + np.log(np.exp(_cos(x[b:b + 1], all_y) / t).sum())
                 for b in range(5))
  got = rlm_alignment.infonce_sum(*(tf.constant(a, tf.float32) for a in (x, y, all_y)), t)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_reconstruction_loss_is_the_mean_infonce_over_the_chosen_nodes():
  rng = np.random.default_rng(1)
  recon, profiles = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  t = 0.5
  e = np.exp(_cos(recon, profiles) / t)
  expected = -np.mean(np.log(np.diag(e) / (e.sum(1) + 1e-8) + 1e-8))
  got = rlm_alignment.reconstruction_loss(tf.constant(recon, tf.float32), tf.constant(profiles, tf.float32), t)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_a_user_profile_is_the_mean_of_its_positives_profiles():
  item_profiles = np.arange(12, dtype=np.float32).reshape(4, 3)
  got = rlm_alignment.user_profiles(tf.constant([0, 0, 1]), tf.constant([0, 2, 3]), item_profiles, 2)
  np.testing.assert_allclose(got.numpy(), [(item_profiles[0] + item_profiles[2]) / 2, item_profiles[3]])


@pytest.mark.parametrize('variant, shapes', [('con', [(16, 12), (12,), (12, 8), (8,)]),
                                             ('gen', [(8, 12), (12,), (12, 16), (16,)])])
def test_the_projector_maps_profiles_to_embeddings_and_the_decoder_back(variant, shapes):
  assert rlm_alignment.mlp_shapes(variant, embedding_dim=8, profile_dim=16) == shapes
  weights = rlm_alignment.initial_mlp(variant, embedding_dim=8, profile_dim=16, seed=0)
  assert [w.shape for w in weights] == shapes and all(w.dtype == np.float32 for w in weights)
  limit = np.sqrt(6.0 / sum(shapes[0]))  # Xavier-uniform kernel
  assert np.abs(weights[0]).max() <= limit and np.abs(weights[0]).max() > 0.8 * limit


def _train(variant, options, seed=(1, 2), weight_decay=0.0):
  rng = np.random.default_rng(0)
  users = rng.normal(0, 0.1, (3, 8)).astype(np.float32)
  items = rng.normal(0, 0.1, (20, 8)).astype(np.float32)
  profiles = rng.normal(size=(20, 16)).astype(np.float32)
  weights = rlm_alignment.initial_mlp(variant, embedding_dim=8, profile_dim=16, seed=0)
  local_users = tf.constant([0, 0, 1, 1, 2, 2], tf.int32)
  positives = tf.constant([0, 1, 2, 3, 4, 5], tf.int32)
  return (items, weights), rlm_alignment.train_local(
      users, items, weights, local_users, positives, tf.constant(seed, tf.int32), variant=variant,
      item_profiles=profiles, options=options, epochs=2, batch_size=8, num_negatives=2,
      learning_rate=0.01, weight_decay=weight_decay)


@pytest.mark.parametrize('variant, options', [
    ('con', {'weight': 0.01, 'temperature': 0.2}),
    ('gen', {'weight': 0.1, 'temperature': 0.2, 'mask_ratio': 0.5})])
def test_local_training_updates_the_mlp_and_is_reproducible(variant, options):
  (items0, weights0), (users, items, weights, loss) = _train(variant, options)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert all(np.abs(w.numpy() - w0).max() > 0 for w, w0 in zip(weights, weights0))
  assert np.abs(items.numpy() - items0).max() > 0
  _, (users2, items2, weights2, loss2) = _train(variant, options)
  np.testing.assert_array_equal(items.numpy(), items2.numpy())
  np.testing.assert_array_equal(users.numpy(), users2.numpy())
  assert float(loss) == float(loss2)


def test_with_zero_weight_the_tables_train_as_plain_mf():
  """The alignment term is additive: at weight 0 the users and items follow MF's BCE alone."""
  from tff_rqfed.models import mf

  (items0, _), (users, items, _, _) = _train('con', {'weight': 0.0, 'temperature': 0.2})
  rng = np.random.default_rng(0)
  users0 = rng.normal(0, 0.1, (3, 8)).astype(np.float32)
  rows, coefficients = mf.identity_parameterisation(20)
  users_mf, items_mf, _, _ = mf.train_local(
      users0, items0, rows, coefficients, tf.constant([0, 0, 1, 1, 2, 2]), tf.constant([0, 1, 2, 3, 4, 5]),
      tf.constant((1, 2), tf.int32), epochs=2, batch_size=8, num_negatives=2, learning_rate=0.01,
      weight_decay=0.0)
  np.testing.assert_allclose(users.numpy(), users_mf.numpy(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(items.numpy(), items_mf.numpy(), rtol=1e-5, atol=1e-7)


def test_the_generative_term_trains_items_outside_the_batches():
  """Gen reconstructs the profiles of nodes drawn among everything the client trains, so with a
  mask ratio of 1 every touched item and every user gets the reconstruction's gradient."""
  (items0, _), (_, items, _, _) = _train('gen', {'weight': 1.0, 'temperature': 0.2, 'mask_ratio': 1.0})
  (_, _), (_, items_con, _, _) = _train('con', {'weight': 0.0, 'temperature': 0.2})
  assert np.abs(items.numpy() - items_con.numpy()).max() > 1e-4

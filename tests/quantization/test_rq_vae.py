"""Tests for tff_rqfed.quantization.rq_vae: RQ-VAE code ids (Table 6's RQ-VAE codebook)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.quantization import rq_vae


def _blobs(seed=0):
  """60 points in 16 dimensions around 4 well-separated centres (15 each), and their blob labels."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(scale=5.0, size=(4, 16))
  labels = np.repeat(np.arange(4), 15)
  return (centres[labels] + rng.normal(scale=0.3, size=(60, 16))).astype(np.float32), labels


def test_first_level_codes_recover_separated_blobs_and_training_lowers_the_loss():
  points, labels = _blobs()
  options = dict(levels=2, codes_per_level=4, seed=0, latent_dim=8, hidden_units=32,
                 learning_rate=1e-2)
  codes, loss = rq_vae.rq_vae_codes(points, steps=300, **options)
  short_codes, short_loss = rq_vae.rq_vae_codes(points, steps=5, **options)
  assert codes.shape == (60, 2) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 4
  assert loss < 0.1 * short_loss
  # Each blob gets one first-level code and the blobs get different ones; the k-means start alone
  # (5 steps) gave two blobs the same code, so this is what training adds.
  assert len({int(np.bincount(short_codes[labels == b, 0]).argmax()) for b in range(4)}) < 4
  first = {int(np.bincount(codes[labels == b, 0]).argmax()) for b in range(4)}
  purity = np.mean([np.mean(codes[labels == b, 0] == np.bincount(codes[labels == b, 0]).argmax())
                    for b in range(4)])
  assert len(first) == 4 and purity > 0.9


def test_rq_vae_codes_are_deterministic_for_a_seed_and_depend_on_it():
  points, _ = np.random.default_rng(1).normal(size=(50, 12)).astype(np.float32), None
  options = dict(levels=2, codes_per_level=5, latent_dim=4, hidden_units=16, steps=50)
  codes, loss = rq_vae.rq_vae_codes(points, seed=3, **options)
  again, again_loss = rq_vae.rq_vae_codes(points, seed=3, **options)
  np.testing.assert_array_equal(codes, again)
  assert loss == again_loss
  assert not np.array_equal(codes, rq_vae.rq_vae_codes(points, seed=4, **options)[0])


@pytest.mark.parametrize('options, message', [
    (dict(codes_per_level=100), 'I >= codes_per_level=100'), (dict(levels=0), 'levels must be >= 1'),
    (dict(steps=0), 'steps must be >= 1'),
])
def test_rq_vae_codes_rejects_bad_arguments_quoting_them(options, message):
  arguments = dict(levels=2, codes_per_level=4, seed=0) | options
  with pytest.raises(ValueError, match=message):
    rq_vae.rq_vae_codes(np.zeros((10, 3), np.float32), **arguments)

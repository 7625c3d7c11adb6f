"""Local differential-privacy noise on item embeddings (Sec. 4.5, Eq. 11), its clipping and its cost.

`laplace_noise` draws Lap(0, delta) with stateless TF ops so a client's noise is reproducible from its
round seed. TensorFlow has no stateless Laplace sampler, so it is the inverse CDF of a uniform draw:
x = -delta * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2).

`perturb_item_table` is the mechanism a client applies before its table leaves it (RQFedRec: before
the codebook fit; FedMF: the uploaded table): each item row is first clipped to L1 norm `clip`, then
Lap(0, delta) is added to every entry. The paper states no clipping; without it the sensitivity is
unbounded and no epsilon holds. With it, two tables that differ in one item's row are at L1 distance
at most 2 * clip, so one upload is (2 * clip / delta)-DP for that neighbouring relation (item-level
local DP); `laplace_epsilon` composes the rounds (basic composition or `dp_accounting`'s RDP
accountant, whichever is smaller).
"""

from __future__ import annotations

import math

import dp_accounting
from dp_accounting import rdp
import tensorflow as tf

TARGET_DELTA = 1e-5  # the delta of the (epsilon, delta) reported over a whole run


def laplace_noise(shape, *, scale: float, seed) -> tf.Tensor:
  """float32 Laplace(0, scale) noise of `shape` from the stateless `seed: int32[2]`."""
  if scale < 0:
    raise ValueError(f'Laplace scale must be >= 0, got {scale!r}')
  u = tf.random.stateless_uniform(shape, seed, minval=-0.5 + 1e-7, maxval=0.5)
  return -scale * tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))


def clip_rows_l1(table: tf.Tensor, clip: float) -> tuple[tf.Tensor, tf.Tensor]:
  """(`table: float32[I, d]` with every row scaled to L1 norm <= `clip`, fraction of rows clipped)."""
  norms = tf.reduce_sum(tf.abs(table), axis=1, keepdims=True)
  scale = tf.minimum(1.0, clip / tf.maximum(norms, 1e-30))
  return table * scale, tf.reduce_mean(tf.cast(norms > clip, tf.float32))


def perturb_item_table(table: tf.Tensor, *, scale: float, clip: float, seed) -> tuple[tf.Tensor, tf.Tensor]:
  """Eq. 11 with clipping: (clipped table + Lap(0, scale), fraction of rows clipped); clip 0: none."""
  clipped_fraction = tf.constant(0.0)
  if clip > 0:
    table, clipped_fraction = clip_rows_l1(table, clip)
  return table + laplace_noise(tf.shape(table), scale=scale, seed=seed), clipped_fraction


def laplace_epsilon(*, scale: float, clip: float, rounds: int, target_delta: float = TARGET_DELTA) -> dict:
  """The privacy loss of `rounds` uploads of one client (module docstring): per round and over the run.

  Returns {'epsilon_per_round': 2 clip / scale (pure DP), 'epsilon_over_run': the smaller of the
  rounds' basic composition and their RDP composition at `target_delta`, 'delta', 'clip', 'scale',
  'rounds'}; epsilons are inf without noise or without clipping.
  """
  out = {'mechanism': 'laplace, rows clipped to L1 norm clip, neighbours differ in one item row',
         'scale': scale, 'clip': clip, 'rounds': rounds, 'delta': target_delta}
  if scale <= 0 or clip <= 0:
    return {**out, 'epsilon_per_round': math.inf, 'epsilon_over_run': math.inf}
  event = dp_accounting.LaplaceDpEvent(noise_multiplier=scale / (2.0 * clip))
  accountant = rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
  per_round = 2.0 * clip / scale
  # Pure DP composes additively (delta 0); RDP is tighter for small per-round epsilons, not for large.
  return {**out, 'epsilon_per_round': per_round,
          'epsilon_over_run': min(rounds * per_round, float(accountant.get_epsilon(target_delta)))}

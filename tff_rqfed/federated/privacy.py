"""Local differential-privacy noise on item embeddings before codebook learning (Sec. 4.5, Eq. 11).

`laplace_noise` draws Lap(0, delta) with stateless TF ops so a client's noise is reproducible from its
round seed. TensorFlow has no stateless Laplace sampler, so it is the inverse CDF of a uniform draw:
x = -delta * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2).
"""

from __future__ import annotations

import tensorflow as tf


def laplace_noise(shape, *, scale: float, seed) -> tf.Tensor:
  """float32 Laplace(0, scale) noise of `shape` from the stateless `seed: int32[2]`."""
  if scale < 0:
    raise ValueError(f'Laplace scale must be >= 0, got {scale!r}')
  u = tf.random.stateless_uniform(shape, seed, minval=-0.5 + 1e-7, maxval=0.5)
  return -scale * tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))

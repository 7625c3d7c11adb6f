"""RQ-VAE code ids: a small residual-quantised autoencoder (Zeghidour et al. 2021; Rajput et al. 2023, TIGER).

The alternative to RQ-kmeans in Table 6 of the paper ("RQ-VAE codebook"). An MLP encoder maps each
point to a latent z (float32[latent_dim]); L residual codebooks (M codes each) quantise it,
r_0 = z, e_l = argmin_c ||r_l - C_l[c]||, r_{l+1} = r_l - e_l; an MLP decoder reconstructs the point
from sum_l e_l. The loss is TIGER's:

    ||x - decode(sum_l e_l)||^2 + sum_l ( ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2 ),

with the straight-through estimator through the quantisation. As in TIGER the codebooks start from
RQ-kmeans of the initial latents (`rq_kmeans.rq_kmeans`), which keeps codes from dying at the start.
Only the code ids are used (`rq_vae_codes`): RQFedRec's code values are the residual means of the
d-dimensional embeddings under those ids, as for RQ-kmeans with `kmeans_dim`.

Written by hand: TensorFlow has no residual vector quantiser, and the model is four small matrices;
full-batch Adam over all points, deterministic for a seed on CPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rqfed.quantization import rq_kmeans


def _dense(rng, fan_in: int, fan_out: int):
  bound = 1.0 / np.sqrt(fan_in)
  return (tf.Variable(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)),
          tf.Variable(np.zeros(fan_out, np.float32)))


def _quantise(z, codebooks):
  """(codes int32[n, L], quantised float32[n, k], commitment terms) of latents `z: float32[n, k]`."""
  residual, quantised, codes, vq_loss = z, tf.zeros_like(z), [], 0.0
  for codebook in codebooks:
    distance = (tf.reduce_sum(residual ** 2, 1, keepdims=True) - 2 * residual @ tf.transpose(codebook)
                + tf.reduce_sum(codebook ** 2, 1)[None, :])
    code = tf.argmin(distance, axis=1, output_type=tf.int32)
    chosen = tf.gather(codebook, code)
    vq_loss += tf.reduce_mean(tf.reduce_sum((tf.stop_gradient(residual) - chosen) ** 2, 1))
    vq_loss += 0.25 * tf.reduce_mean(tf.reduce_sum((residual - tf.stop_gradient(chosen)) ** 2, 1))
    quantised += chosen
    residual = residual - chosen
    codes.append(code)
  return tf.stack(codes, axis=1), quantised, vq_loss


def rq_vae_codes(points, *, levels: int, codes_per_level: int, seed: int, latent_dim: int = 32,
                 hidden_units: int = 256, steps: int = 1000, learning_rate: float = 1e-3):
  """int32[I, L] RQ-VAE code ids of `points: float32[I, D]` (and the final loss, float).

  Args:
    levels, codes_per_level: L and M of the residual quantiser (M <= I).
    seed: initialisation seed; the same arguments give the same codes on the same machine.
    latent_dim, hidden_units: the encoder D -> hidden -> latent_dim and the decoder back.
    steps: full-batch Adam steps.
  """
  points = np.asarray(points, np.float32)
  if points.ndim != 2 or points.shape[0] < codes_per_level:
    raise ValueError(f'points must be float[I, D] with I >= codes_per_level={codes_per_level}, '
                     f'got shape {points.shape}')
  for name, value in (('levels', levels), ('latent_dim', latent_dim), ('hidden_units', hidden_units),
                      ('steps', steps)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1, got {value!r}')
  rng = np.random.default_rng([seed, 9])
  d = points.shape[1]
  layers = [_dense(rng, d, hidden_units), _dense(rng, hidden_units, latent_dim),
            _dense(rng, latent_dim, hidden_units), _dense(rng, hidden_units, d)]
  x = tf.constant(points)

  def encode(values):
    return tf.nn.relu(values @ layers[0][0] + layers[0][1]) @ layers[1][0] + layers[1][1]

  def decode(latent):
    return tf.nn.relu(latent @ layers[2][0] + layers[2][1]) @ layers[3][0] + layers[3][1]

  initial = rq_kmeans.rq_kmeans(encode(x).numpy(), levels=levels, codes_per_level=codes_per_level,
                                seed=seed, iterations=20)
  codebooks = [tf.Variable(c) for c in np.asarray(initial.centres, np.float32)]
  variables = [v for layer in layers for v in layer] + codebooks
  optimizer = tf.keras.optimizers.Adam(learning_rate)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      z = encode(x)
      _, quantised, vq_loss = _quantise(z, codebooks)
      straight_through = z + tf.stop_gradient(quantised - z)
      loss = tf.reduce_mean(tf.reduce_sum((x - decode(straight_through)) ** 2, 1)) + vq_loss
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  loss = None
  for _ in range(steps):
    loss = step()
  codes, _, _ = _quantise(encode(x), codebooks)
  return codes.numpy().astype(np.int32), float(loss)

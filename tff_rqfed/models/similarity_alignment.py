"""FedCIA's alignment of a client's item table to the server's mean item-item similarity, exactly and cheaply.

FedCIA (Han et al., SIGIR 2025; official code `Mingzhe-Han/FedCIA`, `flalgorithm/fedcia_param.py`,
`client_download`) aligns a client's private item table `E: float32[I, d]` to the averaged similarity
`S: float32[I, I]` with `steps` SGD steps (100 in the released code, lr `agg_lr` = 0.1, weight decay the
model's, 1e-6 there) on

    loss(E) = || E E^T - S ||_F        (the Frobenius norm itself, `torch.norm(..., p=2)`, not its square).

Formed literally, a step costs two I x I x d products (E E^T, then (E E^T - S) E): 2.9 GMAC at I = 1682,
d = 512 (ML-100k), 14 GMAC at I = 3706 (ML-1M). This module computes the same steps without any
I x I x d product inside the loop:

1. S is not symmetric (FedCIA's Laplace noise is drawn for every entry), but only its symmetric part
   S_sym = (S + S^T) / 2 moves E: with A = E E^T - S,
       grad ||A||_F = 2 (E E^T - S_sym) E / ||A||_F,   ||A||_F^2 = ||E E^T - S_sym||_F^2 + ||S_anti||_F^2,
   where S_anti = (S - S^T) / 2 is constant (symmetric and antisymmetric matrices are orthogonal).
2. S_sym = V diag(lam) V^T (`tf.linalg.eigh`, once per round, on the server: `spectral_target`). In the
   coordinates F = V^T E (V orthogonal) E E^T - S_sym = V (F F^T - diag(lam)) V^T, so the step is
       F <- F - lr (2 (F G - lam * F) / ||A||_F + weight_decay F),   G = F^T F = E^T E  [d, d],
       ||E E^T - S_sym||_F^2 = ||G||_F^2 - 2 sum_i lam_i ||F_i||^2 + ||lam||^2,
   two I x d x d products per step (0.88 GMAC on ML-100k, 1.9 GMAC on ML-1M) plus one I x I x d change
   of basis into and one out of the loop. That is the same arithmetic as the literal steps, reordered:
   `tests/models/test_similarity_alignment.py` checks it against autodiff of the literal loss.
   (`benchmarks.fedcia_alignment` times the three forms.)

The squared norm is a difference of large terms; it is accumulated in float64 so that only the float32
matrix products round, and it is floored at 0 before the square root.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class SpectralTarget(NamedTuple):
  """S: float32[I, I] as what the alignment reads from it.

  Attributes:
    eigenvectors: float32[I, I], V with S_sym = V diag(eigenvalues) V^T.
    eigenvalues: float32[I].
    antisymmetric_sq_norm: float32[], ||(S - S^T) / 2||_F^2 (enters the loss, not the gradient).
  """

  eigenvectors: tf.Tensor
  eigenvalues: tf.Tensor
  antisymmetric_sq_norm: tf.Tensor


def spectral_target(similarity) -> SpectralTarget:
  """The `SpectralTarget` of `similarity: float32[I, I]` (one `eigh` of its symmetric part)."""
  similarity = tf.convert_to_tensor(similarity, tf.float32)
  symmetric = 0.5 * (similarity + tf.transpose(similarity))
  antisymmetric = 0.5 * (similarity - tf.transpose(similarity))
  eigenvalues, eigenvectors = tf.linalg.eigh(symmetric)
  return SpectralTarget(eigenvectors, eigenvalues, tf.reduce_sum(tf.square(antisymmetric)))


def _residual_sq_norm(gram, coordinates, target: SpectralTarget, eigenvalue_sq_norm):
  """||E E^T - S||_F^2 as float64 from G = E^T E and F = V^T E (see the module docstring)."""
  gram64 = tf.cast(gram, tf.float64)
  row_sq_norms = tf.cast(tf.reduce_sum(tf.square(coordinates), axis=1), tf.float64)
  cross = tf.reduce_sum(tf.cast(target.eigenvalues, tf.float64) * row_sq_norms)
  return (tf.reduce_sum(tf.square(gram64)) - 2.0 * cross + eigenvalue_sq_norm
          + tf.cast(target.antisymmetric_sq_norm, tf.float64))


def align(items, target: SpectralTarget, *, steps: int, learning_rate: float, weight_decay: float):
  """`steps` SGD steps of `items: float32[I, d]` on ||items items^T - S||_F (FedCIA's `client_download`).

  Returns (aligned items: float32[I, d], ||items items^T - S||_F before the last step: float32[]), the
  loss the released code computes at its last step (0 when `steps` is 0).
  """
  if steps < 0:
    raise ValueError(f'steps must be >= 0, got {steps!r}')
  items = tf.convert_to_tensor(items, tf.float32)
  if steps == 0:
    return items, tf.constant(0.0)
  eigenvalues = target.eigenvalues[:, None]
  eigenvalue_sq_norm = tf.reduce_sum(tf.square(tf.cast(target.eigenvalues, tf.float64)))
  coordinates = tf.matmul(target.eigenvectors, items, transpose_a=True)  # F = V^T E

  def body(step, f, norm):
    del norm
    gram = tf.matmul(f, f, transpose_a=True)  # G = F^T F = E^T E
    sq_norm = _residual_sq_norm(gram, f, target, eigenvalue_sq_norm)
    norm = tf.cast(tf.sqrt(tf.maximum(sq_norm, 0.0)), tf.float32)
    direction = tf.matmul(f, gram) - eigenvalues * f  # V^T (E E^T - S_sym) E
    gradient = 2.0 * direction / tf.maximum(norm, 1e-30) + weight_decay * f
    return step + 1, f - learning_rate * gradient, norm

  _, coordinates, norm = tf.while_loop(
      lambda step, *_: step < steps, body, (tf.constant(0), coordinates, tf.constant(0.0)))
  return tf.matmul(target.eigenvectors, coordinates), norm

"""Independent stateless random streams of one client round.

A client gets one stateless seed per round (`int32[2]`, `federated.process.client_data_values`). Every
random draw of its round takes its own seed from it with `stream_seed(seed, STREAM, index)`, derived by
`tf.random.experimental.stateless_fold_in` (a hash of the seed and the stream, not `seed + k`), so no two
uses share or overlap a stream: the negatives of an epoch, the order of an epoch's examples and the
Laplace noise of Eq. 11 are independent draws.
"""

from __future__ import annotations

import tensorflow as tf

NEGATIVES = 1  # indexed by epoch: the sampled negatives of Eq. 3
SHUFFLE = 2  # indexed by epoch: the order of the epoch's examples
LAPLACE_NOISE = 3  # Laplace noise on what a client uploads (Eq. 11's item table; FedCIA's similarity)


def stream_seed(seed, stream: int, index=0) -> tf.Tensor:
  """int64[2] seed of draw `index` of `stream` (one of the constants above) under `seed: int[2]`."""
  return tf.random.experimental.stateless_fold_in(
      tf.random.experimental.stateless_fold_in(seed, stream), index)

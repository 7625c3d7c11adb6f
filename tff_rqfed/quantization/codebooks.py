"""Dual-channel residual-quantised codebooks: reconstruction (Eq. 6/9), fit (Eq. 7), warm-up (Eq. 10).

Codebooks are one tensor `codebooks: float32[2, L, M, d]`, channel 0 the semantic codebooks B^s and
channel 1 the collaborative codebooks B^c (Sec. 4.2.3). Each item has code ids `semantic_ids: int32[I, L]`
and `collaborative_ids: int32[I, L]`. For training, the codebooks are flattened to a parameter table
`params: float32[2 L M, d]` and each item becomes 2L (row, coefficient) pairs, the parameterisation
`tff_rqfed.models.mf` trains: row c*L*M + l*M + q^{c,(l)}_i with coefficient 1 - lambda (semantic) or
lambda (collaborative).

All functions are graph-compatible TensorFlow (they run inside client `tff.tensorflow.computation`s)
and accept NumPy inputs eagerly.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rqfed.models import mf

SEMANTIC, COLLABORATIVE = 0, 1


def collaborative_rate(round_num, *, warmup_rounds: int, start_round=0):
  """Eq. 10: lambda_t = min(1, (t - start_round) / T_warm), and 0 before `start_round`.

  The paper's schedule is `start_round=0`; Sec. 4.4 holds lambda at 0 while no collaborative ids exist,
  which callers express by not calling this before the first refresh. `start_round` = the round of the
  first refresh lets the warm-up begin at 0 instead of jumping to t/T_warm.
  """
  if warmup_rounds <= 0:
    return 1.0
  return float(min(1.0, max(0.0, (round_num - start_round) / warmup_rounds)))


def codebook_parameterisation(semantic_ids, collaborative_ids, rate, *, codes_per_level: int):
  """(rows: int32[I, 2L], coefficients: float32[I, 2L]) of Eq. 6 over `params: float32[2LM, d]`."""
  semantic_ids = tf.convert_to_tensor(semantic_ids, tf.int32)
  collaborative_ids = tf.convert_to_tensor(collaborative_ids, tf.int32)
  levels = tf.shape(semantic_ids)[1]
  level_offset = tf.range(levels) * codes_per_level
  semantic_rows = semantic_ids + level_offset[None, :]
  collaborative_rows = collaborative_ids + level_offset[None, :] + levels * codes_per_level
  rows = tf.concat([semantic_rows, collaborative_rows], axis=1)
  rate = tf.cast(rate, tf.float32)
  ones = tf.ones_like(semantic_ids, tf.float32)
  coefficients = tf.concat([(1.0 - rate) * ones, rate * ones], axis=1)
  return rows, coefficients


def flatten(codebooks):
  """float32[2, L, M, d] -> float32[2LM, d]."""
  d = tf.shape(codebooks)[-1]
  return tf.reshape(codebooks, [-1, d])


def reconstruct_items(codebooks, semantic_ids, collaborative_ids, rate):
  """Eq. 6/9: float32[I, d] = (1-lambda) sum_l B^s_l[q^s_l] + lambda sum_l B^c_l[q^c_l].

  At lambda = 0 or 1 (before the first refresh and after the warm-up) only one channel enters: it is
  summed from its L row gathers, half the work of the weighted sum over all 2L rows. That equals the
  weighted sum on paper and on small tests, but at d = 512 the sum is associated differently and can
  differ in the last bit (measured: it changes RQFedRec's refresh and run, README "Before and
  after"). In between, the weighted sum over the 2L rows (`mf.item_vectors`).
  """
  codebooks = tf.convert_to_tensor(codebooks, tf.float32)
  rate = tf.cast(rate, tf.float32)
  levels = codebooks.shape[1]

  def channel(c, ids):
    ids = tf.convert_to_tensor(ids, tf.int32)
    return tf.add_n([tf.gather(codebooks[c, l], ids[:, l]) for l in range(levels)])

  def both_channels():
    rows, coefficients = codebook_parameterisation(
        semantic_ids, collaborative_ids, rate, codes_per_level=tf.shape(codebooks)[2])
    return mf.item_vectors(flatten(codebooks), rows, coefficients, tf.range(tf.shape(rows)[0]))

  return tf.case([(tf.equal(rate, 0.0), lambda: channel(SEMANTIC, semantic_ids)),
                  (tf.equal(rate, 1.0), lambda: channel(COLLABORATIVE, collaborative_ids))],
                 default=both_channels, exclusive=True)


def mean_squared_error(residual):
  """Eq. 7's mean over items of ||r_i||^2 for `residual: float32[m, d]`; 0 when m = 0 (a client with
  no training data fits nothing, and its weight-0 metrics must not turn the weighted mean into NaN)."""
  return tf.cond(tf.shape(residual)[0] > 0,
                 lambda: tf.reduce_mean(tf.reduce_sum(tf.square(residual), axis=1)),
                 lambda: tf.constant(0.0))


def codebook_loss(params, rows, coefficients, targets, items):
  """Eq. 7: mean over `items: int32[m]` of ||v_i - v~_i||^2 (float32 scalar)."""
  residual = tf.gather(targets, items) - mf.item_vectors(params, rows, coefficients, items)
  return mean_squared_error(residual)


def fit_codebooks(params, rows, coefficients, targets, items, *, steps: int, learning_rate: float):
  """Minimises Eq. 7 over the code rows of `items` with item embeddings and code ids frozen.

  Full-batch row-sparse Adam from the current `params: float32[P, d]` (the global codebooks), so code
  rows no item in `items` uses keep their global value.

  Returns:
    (params, loss_before, loss_after).
  """
  d = tf.shape(params)[1]
  m = tf.size(items)
  item_rows = tf.gather(rows, items)  # [m, R]
  item_coef = tf.gather(coefficients, items)
  flat_rows = tf.reshape(item_rows, [-1])
  item_targets = tf.gather(targets, items)

  def loss_and_grad(params_t):
    p = tf.gather(params_t, flat_rows)
    with tf.GradientTape() as tape:
      tape.watch(p)
      vec = tf.einsum('br,brd->bd', item_coef, tf.reshape(p, [m, tf.shape(rows)[1], d]))
      loss = mean_squared_error(item_targets - vec)
    return loss, tape.gradient(loss, p)

  loss_before, _ = loss_and_grad(params)

  def body(step, params_t, pm, pv):
    _, grad = loss_and_grad(params_t)
    params_t, pm, pv = mf.row_sparse_adam(
        params_t, pm, pv, flat_rows, grad, step=tf.cast(step + 1, tf.float32),
        learning_rate=learning_rate, weight_decay=0.0,
    )
    return step + 1, params_t, pm, pv

  _, params, _, _ = tf.while_loop(
      lambda step, *_: step < steps,
      body,
      (tf.constant(0), params, tf.zeros_like(params), tf.zeros_like(params)),
  )
  loss_after, _ = loss_and_grad(params)
  return params, loss_before, loss_after


def assignment_matrix(codes, *, codes_per_level: int, scale: float = 1.0) -> np.ndarray:
  """float64[I, L * M]: row i holds `scale` in the column of each code item i uses (Eq. 6 as a matrix)."""
  codes = np.asarray(codes)
  num_items, levels = codes.shape
  design = np.zeros((num_items, levels * codes_per_level), np.float64)
  for level in range(levels):
    design[np.arange(num_items), level * codes_per_level + codes[:, level]] = scale
  return design


def least_squares_codebook(codes, targets, *, codes_per_level: int, scale: float = 1.0,
                           l2: float = 1e-4) -> np.ndarray:
  """Exact least-squares code values: argmin_B ||scale * sum_l B_l[codes_l] - targets||^2.

  Used on the server when collaborative ids are rebuilt (Sec. 4.3.2) so the new codebook reproduces
  the item embeddings already learned instead of restarting from k-means centres.

  Args:
    codes: int32[I, L]; targets: float32[I, d]; scale: the channel's coefficient (lambda).

  Returns:
    float32[L, M, d].
  """
  codes = np.asarray(codes)
  levels = codes.shape[1]
  design = assignment_matrix(codes, codes_per_level=codes_per_level, scale=scale)
  gram = design.T @ design + l2 * np.eye(design.shape[1])
  solution = np.linalg.solve(gram, design.T @ np.asarray(targets, np.float64))
  return solution.reshape(levels, codes_per_level, -1).astype(np.float32)


def fit_codebooks_blockwise(codebooks, semantic_ids, collaborative_ids, rate, targets, items, *,
                            sweeps: int, ridge: float):
  """Minimises Eq. 7 (+ a ridge towards the global codebooks) by exact block coordinate descent.

  Each block is one level of one channel. With the other 2L - 1 blocks fixed, Eq. 7 is a separate
  least-squares problem per code whose solution is a weighted mean of the residuals of the items that
  use it, like the centre update of k-means:

      b_j = (a * sum_{i in I_k, q_i = j} r_i + ridge * b_j^global) / (a^2 * n_j + ridge),

  with a the channel's coefficient (1 - lambda or lambda, Eq. 6) and r_i the item's target minus the
  other blocks. Codes no item in I_k uses keep their global value. `sweeps` passes over the 2L blocks
  (Gauss-Seidel) converge to the ridge solution; each costs O(|I_k| d), against O(steps |I_k| L d)
  and three full-codebook copies per step for gradient descent. `ridge` = 0 is the exact
  least-squares fit; > 0 keeps codes that few items use near the global value and bounds the update
  of a channel whose coefficient is small (lambda at the start of the warm-up).

  Args:
    codebooks: float32[2, L, M, d] global codebooks.
    semantic_ids, collaborative_ids: int32[I, L].
    rate: lambda.
    targets: float32[I, d] the client's item embeddings (teacher).
    items: int32[m] the items of I_k.

  Returns:
    (codebooks float32[2, L, M, d], loss_before, loss_after) with the losses of Eq. 7.
  """
  codebooks = tf.convert_to_tensor(codebooks, tf.float32)
  levels = codebooks.shape[1]
  codes = tf.shape(codebooks)[2]
  rate = tf.cast(rate, tf.float32)
  coefficient = [1.0 - rate, rate]
  ids = [tf.gather(tf.convert_to_tensor(semantic_ids, tf.int32), items),
         tf.gather(tf.convert_to_tensor(collaborative_ids, tf.int32), items)]
  item_targets = tf.gather(targets, items)
  blocks = [[codebooks[c, l] for l in range(levels)] for c in range(2)]

  def block_term(c, l):
    return coefficient[c] * tf.gather(blocks[c][l], ids[c][:, l])

  # residual = targets - reconstruction, kept up to date block by block.
  residual = item_targets - tf.add_n([block_term(c, l) for c in range(2) for l in range(levels)])

  def scaled(a, rows):
    # a * rows, with the pass over float32[m, d] skipped when a is exactly 1 (the active channel
    # before the first refresh and after the warm-up): the same values, one pass less.
    return tf.cond(tf.equal(a, 1.0), lambda: rows, lambda: a * rows)

  def solve_block(c, l, residual, block):
    """Block (c, l)'s exact update and the residual after it (see the docstring)."""
    a = coefficient[c]
    code = ids[c][:, l]
    residual = residual + scaled(a, tf.gather(block, code))  # the residual without this block
    counts = tf.math.unsorted_segment_sum(tf.ones_like(code, tf.float32), code, codes)
    numerator = a * tf.math.unsorted_segment_sum(residual, code, codes) + ridge * block
    denominator = a * a * counts + ridge
    solved = numerator / tf.maximum(denominator, 1e-12)[:, None]
    use = tf.logical_and(counts > 0, denominator > 1e-12)[:, None]
    block = tf.where(use, solved, block)
    return residual - scaled(a, tf.gather(block, code)), block

  loss_before = mean_squared_error(residual)
  for _ in range(sweeps):
    for c in range(2):
      for l in range(levels):
        # A block with coefficient 0 does not enter Eq. 7: it keeps its global value exactly (its
        # ridge solution (ridge * b) / ridge gives it only up to rounding) and the residual does not
        # change, so it is skipped. Before the first refresh (lambda = 0) and after the warm-up
        # (lambda = 1) that is one whole channel.
        residual, blocks[c][l] = tf.cond(
            tf.equal(coefficient[c], 0.0),
            lambda c=c, l=l, r=residual: (r, blocks[c][l]),
            lambda c=c, l=l, r=residual: solve_block(c, l, r, blocks[c][l]),
        )
  fitted = tf.stack([tf.stack(blocks[c]) for c in range(2)])
  return fitted, loss_before, mean_squared_error(residual)

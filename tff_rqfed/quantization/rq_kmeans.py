"""Residual-quantisation k-means (RQ-kmeans), paper Sec. 3.3, Eq. (2).

RQ-kmeans turns an embedding table ``x: float32[n, d]`` into ``L`` codebooks
``centres: float32[L, M, d]`` and a tuple of ``L`` code IDs per item
``codes: int32[n, L]``.  Level ``l`` runs k-means on the residuals
``r^(l)`` (``r^(1) = x``), assigns each residual to its nearest code embedding
(Eq. 2: ``q^(l)(i) = argmin_k ||r_i^(l) - b_k^(l)||^2``) and passes on
``r^(l+1) = r^(l) - b_{q^(l)(i)}^(l)``.  The reconstruction is
``x~_i = sum_l b_{q^(l)(i)}^(l)`` (Sec. 3.3), see :func:`reconstruct`.

The server runs this between federated rounds (semantic IDs once before
training, Sec. 4.3.1; collaborative IDs every tau rounds, Sec. 4.3.2), outside
any TFF computation.  It is written in TensorFlow: k-means++ seeding and the
Lloyd iterations of one level are single ``tf.function`` graphs (``tf.while_loop``
inside), so the same code runs on a GPU whenever one is visible to the process.

Details:

* Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; ``2 + ln M`` candidates
  per step, as scikit-learn) with stateless random ops keyed on ``(seed, level)``.
* Distances are ``||x||^2 - 2 x c^T + ||c||^2`` over chunks of ``batch_size``
  rows, so the ``[n, M]`` distance matrix is never materialised at once.
* An empty cluster is re-seeded with the point farthest from its own centre
  (the k-th empty cluster gets the k-th farthest point), as in scikit-learn.
* Lloyd stops after ``iterations`` updates or once the relative improvement of
  the sum of squared distances falls below ``tolerance``.
* Determinism: same inputs + seed -> identical codes and centres on CPU.  (On a
  GPU, ``unsorted_segment_sum`` uses atomics, so centres may differ in the last
  bits between runs unless ``tf.config.experimental.enable_op_determinism()``
  is on.)
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import tensorflow as tf

__all__ = ["RQResult", "rq_kmeans", "assign_codes", "reconstruct"]


@dataclasses.dataclass(frozen=True)
class RQResult:
  """Output of :func:`rq_kmeans`.

  Attributes:
    codes: int32[n, L]; ``codes[i, l]`` is item i's code ID at level l (0-based;
      the paper's IDs are 1-based).
    centres: float32[L, M, d]; the codebooks ``B^(l)``.
    reconstruction_error: mean over items of
      ``||x_i - sum_l centres[l, codes[i, l]]||^2`` after all L levels.
    level_errors: tuple of L floats; the same mean after levels 1..L
      (non-increasing; the last equals ``reconstruction_error``).
    level_iterations: tuple of L ints; Lloyd updates run at each level
      (``<= iterations``; fewer when the tolerance stopped it early).
  """
  codes: np.ndarray
  centres: np.ndarray
  reconstruction_error: float
  level_errors: tuple[float, ...]
  level_iterations: tuple[int, ...]


# ----------------------------------------------------------------------------
# TensorFlow kernels.
# ----------------------------------------------------------------------------

_X_SPEC = tf.TensorSpec([None, None], tf.float32)
_INT_SPEC = tf.TensorSpec([], tf.int32)


def _assign_impl(x, centres, batch_size):
  """Nearest centre per row, over chunks of ``batch_size`` rows.

  Args:
    x: float32[n, d].
    centres: float32[M, d].
    batch_size: int32 scalar.

  Returns:
    (codes: int32[n], sq_dist: float32[n]) with ``sq_dist`` clamped at 0.
  """
  n = tf.shape(x)[0]
  centre_sq = tf.reduce_sum(tf.square(centres), axis=1)  # [M]
  num_batches = (n + batch_size - 1) // batch_size
  codes_ta = tf.TensorArray(tf.int32, size=num_batches, infer_shape=False,
                            element_shape=tf.TensorShape([None]))
  dist_ta = tf.TensorArray(tf.float32, size=num_batches, infer_shape=False,
                           element_shape=tf.TensorShape([None]))

  def body(b, codes_ta, dist_ta):
    start = b * batch_size
    xb = x[start:tf.minimum(start + batch_size, n)]  # [B, d]
    dist = (tf.reduce_sum(tf.square(xb), axis=1, keepdims=True)
            - 2.0 * tf.matmul(xb, centres, transpose_b=True)
            + centre_sq[tf.newaxis, :])  # [B, M]
    codes = tf.argmin(dist, axis=1, output_type=tf.int32)  # first on ties
    best = tf.maximum(tf.gather(dist, codes, axis=1, batch_dims=1), 0.0)
    return b + 1, codes_ta.write(b, codes), dist_ta.write(b, best)

  _, codes_ta, dist_ta = tf.while_loop(
      lambda b, *_: b < num_batches, body, (0, codes_ta, dist_ta),
      parallel_iterations=1)
  return codes_ta.concat(), dist_ta.concat()


_assign = tf.function(_assign_impl,
                      input_signature=[_X_SPEC, _X_SPEC, _INT_SPEC])


@tf.function(input_signature=[_X_SPEC, _INT_SPEC, tf.TensorSpec([2], tf.int64)])
def _kmeans_plus_plus(x, num_centres, seed):
  """Greedy k-means++ (D^2) seeding, as in scikit-learn.

  Each step draws ``2 + floor(ln M)`` candidates with probability proportional to
  the squared distance to the nearest centre chosen so far and keeps the one that
  lowers the total squared distance most.

  Args:
    x: float32[n, d] points.
    num_centres: int32 scalar M <= n.
    seed: int64[2] stateless seed.

  Returns:
    float32[M, d] initial centres (rows of x).
  """
  n = tf.shape(x)[0]
  num_trials = 2 + tf.cast(tf.math.log(tf.cast(num_centres, tf.float64)), tf.int32)
  x_sq = tf.reduce_sum(tf.square(x), axis=1)  # [n]

  def exact_sq_dist(centre):  # float32[n]; exactly 0 for duplicates of `centre`
    return tf.reduce_sum(tf.square(x - centre), axis=1)

  first = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=n, dtype=tf.int32)
  first_centre = tf.gather(x, first)
  min_sq = exact_sq_dist(first_centre)
  centres_ta = tf.TensorArray(tf.float32, size=num_centres, element_shape=first_centre.shape)
  centres_ta = centres_ta.write(0, first_centre)

  def body(i, centres_ta, min_sq):
    step_seed = tf.random.experimental.stateless_fold_in(seed, i)
    total = tf.reduce_sum(tf.cast(min_sq, tf.float64))
    cdf = tf.cumsum(tf.cast(min_sq, tf.float64))
    u = tf.random.stateless_uniform([num_trials], seed=step_seed, dtype=tf.float64)
    weighted = tf.searchsorted(cdf, u * total, side="right", out_type=tf.int32)
    weighted = tf.minimum(weighted, n - 1)
    # All remaining distances zero (fewer distinct points than M): uniform draws.
    uniform = tf.random.stateless_uniform([num_trials], seed=step_seed, minval=0, maxval=n,
                                          dtype=tf.int32)
    candidates = tf.where(total > 0.0, weighted, uniform)  # int32[T]
    cand = tf.gather(x, candidates)  # [T, d]
    cand_sq = tf.maximum(x_sq[:, tf.newaxis] - 2.0 * tf.matmul(x, cand, transpose_b=True)
                         + tf.reduce_sum(tf.square(cand), axis=1)[tf.newaxis, :], 0.0)
    potential = tf.reduce_sum(tf.minimum(min_sq[:, tf.newaxis], cand_sq), axis=0)  # [T]
    centre = tf.gather(cand, tf.argmin(potential, output_type=tf.int32))
    min_sq = tf.minimum(min_sq, exact_sq_dist(centre))
    return i + 1, centres_ta.write(i, centre), min_sq

  _, centres_ta, _ = tf.while_loop(
      lambda i, *_: i < num_centres, body, (1, centres_ta, min_sq), parallel_iterations=1)
  return centres_ta.stack()


def _update_centres_impl(x, codes, sq_dist, centres):
  """Lloyd M-step with empty-cluster re-seeding.

  Args:
    x: float32[n, d].
    codes: int32[n] current assignment.
    sq_dist: float32[n] squared distance of each point to its centre.
    centres: float32[M, d] current centres (only M is used).

  Returns:
    float32[M, d]: cluster means; an empty cluster takes the point farthest
    from its centre (k-th empty cluster <- k-th farthest point).
  """
  num_centres = tf.shape(centres)[0]
  sums = tf.math.unsorted_segment_sum(x, codes, num_centres)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(sq_dist), codes,
                                        num_centres)
  means = sums / tf.maximum(counts, 1.0)[:, tf.newaxis]
  empty = tf.where(tf.equal(counts, 0.0))  # int64[E, 1]
  farthest = tf.math.top_k(sq_dist, k=tf.shape(empty)[0]).indices  # [E]
  return tf.tensor_scatter_nd_update(means, empty, tf.gather(x, farthest))


_update_centres = tf.function(
    _update_centres_impl,
    input_signature=[_X_SPEC, tf.TensorSpec([None], tf.int32),
                     tf.TensorSpec([None], tf.float32), _X_SPEC])


@tf.function(input_signature=[_X_SPEC, _X_SPEC, _INT_SPEC,
                              tf.TensorSpec([], tf.float64), _INT_SPEC])
def _lloyd(x, centres, iterations, tolerance, batch_size):
  """Lloyd iterations from ``centres``; returns (float32[M, d], int32 updates)."""
  codes, sq_dist = _assign_impl(x, centres, batch_size)
  sse = tf.reduce_sum(tf.cast(sq_dist, tf.float64))

  def body(i, centres, codes, sq_dist, sse, done):
    del done
    centres = _update_centres_impl(x, codes, sq_dist, centres)
    codes, sq_dist = _assign_impl(x, centres, batch_size)
    new_sse = tf.reduce_sum(tf.cast(sq_dist, tf.float64))
    done = (sse - new_sse) <= tolerance * sse
    return i + 1, centres, codes, sq_dist, new_sse, done

  i, centres, *_ = tf.while_loop(
      lambda i, *state: tf.logical_and(i < iterations,
                                       tf.logical_not(state[-1])),
      body, (0, centres, codes, sq_dist, sse, False),
      parallel_iterations=1)
  return centres, i


# ----------------------------------------------------------------------------
# Validation helpers.
# ----------------------------------------------------------------------------


def _check_points(x, name="x") -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be 2-D [n, d]; got shape {arr.shape}.")
  if arr.shape[0] == 0 or arr.shape[1] == 0:
    raise ValueError(f"{name} must be non-empty; got shape {arr.shape}.")
  if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(
      arr.dtype, np.complexfloating):
    raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}.")
  arr = arr.astype(np.float32, copy=False)
  if not np.all(np.isfinite(arr)):
    bad = np.argwhere(~np.isfinite(arr))[0]
    raise ValueError(f"{name} must be finite; {name}[{bad[0]}, {bad[1]}] = "
                     f"{arr[bad[0], bad[1]]!r} (after casting to float32).")
  return np.ascontiguousarray(arr)


def _check_positive_int(value, name) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int; got {value!r}.")
  if value < 1:
    raise ValueError(f"{name} must be >= 1; got {value!r}.")
  return int(value)


def _check_codes(codes, *, codes_per_level: int, rows: int | None = None,
                 levels: int | None = None) -> np.ndarray:
  """int32[n, L] codes in ``[0, codes_per_level)``, with n = ``rows`` and L = ``levels`` if given."""
  arr = np.asarray(codes)
  if (arr.ndim != 2 or (rows is not None and arr.shape[0] != rows)
      or (levels is not None and arr.shape[1] != levels)):
    expected = f"[n{'' if rows is None else f'={rows}'}, L{'' if levels is None else f'={levels}'}]"
    raise ValueError(f"codes must have shape {expected}; got {arr.shape}.")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"codes must be integers; got dtype {arr.dtype}.")
  if arr.size and (arr.min() < 0 or arr.max() >= codes_per_level):
    bad = arr[(arr < 0) | (arr >= codes_per_level)][0]
    raise ValueError(f"codes must lie in [0, M={codes_per_level}); found {bad}.")
  return arr.astype(np.int32)


def _check_centres(centres, d=None) -> np.ndarray:
  arr = np.asarray(centres)
  if arr.ndim != 3 or 0 in arr.shape:
    raise ValueError(f"centres must be non-empty 3-D [L, M, d]; got shape "
                     f"{arr.shape}.")
  if d is not None and arr.shape[2] != d:
    raise ValueError(f"centres have dimension d={arr.shape[2]} but x has "
                     f"d={d}.")
  arr = arr.astype(np.float32, copy=False)
  if not np.all(np.isfinite(arr)):
    raise ValueError("centres must be finite; found "
                     f"{int(np.sum(~np.isfinite(arr)))} non-finite entries.")
  return arr


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def rq_kmeans(x, *, levels: int, codes_per_level: int, seed: int,
              iterations: int = 50, tolerance: float = 1e-6,
              batch_size: int = 8192) -> RQResult:
  """Fits L residual k-means codebooks to ``x`` (Sec. 3.3, Eq. 2).

  Args:
    x: float[n, d] embedding table (cast to float32), finite.
    levels: L >= 1, number of codebooks.
    codes_per_level: M, centres per codebook; needs ``M <= n``.
    seed: int; with the same inputs gives identical codes and centres.
    iterations: maximum Lloyd updates per level (>= 1).
    tolerance: stop a level once ``(sse_prev - sse) <= tolerance * sse_prev``.
    batch_size: rows per chunk of the distance computation.

  Returns:
    An :class:`RQResult`.
  """
  x = _check_points(x)
  levels = _check_positive_int(levels, "levels")
  num_codes = _check_positive_int(codes_per_level, "codes_per_level")
  iterations = _check_positive_int(iterations, "iterations")
  batch_size = _check_positive_int(batch_size, "batch_size")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise TypeError(f"seed must be an int; got {seed!r}.")
  if not (np.isfinite(tolerance) and tolerance >= 0):
    raise ValueError(f"tolerance must be finite and >= 0; got {tolerance!r}.")
  n = x.shape[0]
  if n < num_codes:
    raise ValueError(f"Need at least codes_per_level={num_codes} points, got "
                     f"n={n}.")

  residual = tf.convert_to_tensor(x)
  codes, centres, errors, run = [], [], [], []
  for level in range(levels):
    init = _kmeans_plus_plus(residual, tf.constant(num_codes, tf.int32),
                             tf.constant([int(seed), level], tf.int64))
    level_centres, updates = _lloyd(residual, init,
                                    tf.constant(iterations, tf.int32),
                                    tf.constant(float(tolerance), tf.float64),
                                    tf.constant(batch_size, tf.int32))
    # Final assignment through the same kernel as `assign_codes`, so that
    # assign_codes(x, result.centres) reproduces result.codes exactly.
    level_codes, _ = _assign(residual, level_centres,
                             tf.constant(batch_size, tf.int32))
    residual = residual - tf.gather(level_centres, level_codes)
    res = residual.numpy().astype(np.float64)
    errors.append(float(np.mean(np.einsum("ij,ij->i", res, res))))
    codes.append(level_codes.numpy())
    centres.append(level_centres.numpy())
    run.append(int(updates.numpy()))
  return RQResult(
      codes=np.stack(codes, axis=1).astype(np.int32),
      centres=np.stack(centres, axis=0).astype(np.float32),
      reconstruction_error=errors[-1],
      level_errors=tuple(errors),
      level_iterations=tuple(run))


def assign_codes(x, centres, *, batch_size: int = 8192) -> np.ndarray:
  """Greedy residual assignment (Eq. 2) of ``x`` to given codebooks.

  Args:
    x: float[n, d] points.
    centres: float[L, M, d] codebooks, e.g. ``RQResult.centres``.
    batch_size: rows per chunk of the distance computation.

  Returns:
    int32[n, L]; level l picks the centre nearest to the residual left by
    levels < l.
  """
  x = _check_points(x)
  centres = _check_centres(centres, d=x.shape[1])
  batch_size = _check_positive_int(batch_size, "batch_size")
  residual = tf.convert_to_tensor(x)
  codes = []
  for level in range(centres.shape[0]):
    level_centres = tf.convert_to_tensor(centres[level])
    level_codes, _ = _assign(residual, level_centres,
                             tf.constant(batch_size, tf.int32))
    residual = residual - tf.gather(level_centres, level_codes)
    codes.append(level_codes.numpy())
  return np.stack(codes, axis=1).astype(np.int32)


def reconstruct(codes, centres) -> np.ndarray:
  """``float32[n, d] = sum_l centres[l, codes[:, l]]`` (Sec. 3.3).

  Args:
    codes: int[n, L] code IDs in ``[0, M)``.
    centres: float[L, M, d] codebooks.
  """
  centres = _check_centres(centres)
  num_levels, num_codes, _ = centres.shape
  codes = _check_codes(codes, codes_per_level=num_codes, levels=num_levels)
  out = np.zeros((codes.shape[0], centres.shape[2]), np.float32)
  for level in range(num_levels):
    out += centres[level][codes[:, level]]
  return out


def residual_centres(x, codes, *, codes_per_level: int) -> np.ndarray:
  """The centres ``float32[L, M, d]`` RQ-kmeans holds for fixed ``codes`` (Sec. 3.3, Eq. 2).

  Level by level, each centre is the mean residual of the points that use it (0 for an unused
  code), the centre update of Lloyd's algorithm. Used when the ids were found in another space
  (for example on the points' principal components) and the centres are wanted in this one.

  Args:
    x: float[n, d] points.
    codes: int[n, L] code IDs in ``[0, codes_per_level)``.
  """
  x = _check_points(x)
  codes = _check_codes(codes, codes_per_level=codes_per_level, rows=x.shape[0])
  residual = x.astype(np.float64)
  centres = np.zeros((codes.shape[1], codes_per_level, x.shape[1]), np.float64)
  for level in range(codes.shape[1]):
    counts = np.bincount(codes[:, level], minlength=codes_per_level)
    np.add.at(centres[level], codes[:, level], residual)
    centres[level] /= np.maximum(counts, 1)[:, None]
    residual = residual - centres[level][codes[:, level]]
  return centres.astype(np.float32)


def make_codes_unique(x, codes, centres) -> np.ndarray:
  """Codes ``int32[n, L]`` in which no two points share the whole L-code tuple, where M allows.

  In a model that represents an item by the sum of its codes (Eq. 6), two items with the same tuple
  are the same item; RQ-kmeans gives many points the same tuple when clusters are small. The first
  point of each tuple keeps it; every other one moves its last-level code to the nearest code (to
  its residual before the last level) that makes its tuple unused, the assignment RQ-kmeans would
  make if the taken codes were not there. Written by hand: no k-means library constrains tuples.
  A prefix shared by more than M points keeps duplicates (there are not enough last-level codes).

  Args:
    x: float[n, d] the points the codes were found for.
    codes: int[n, L] RQ-kmeans codes of ``x`` under ``centres: float[L, M, d]``.
  """
  x = _check_points(x)
  centres = _check_centres(centres, x.shape[1])
  codes = _check_codes(codes, codes_per_level=centres.shape[1], rows=x.shape[0],
                       levels=centres.shape[0])  # a new array: the caller's is not modified
  last = centres.shape[0] - 1
  tuples = [tuple(row) for row in codes.tolist()]
  taken = set()
  duplicates = []
  for index, key in enumerate(tuples):
    if key in taken:
      duplicates.append(index)
    else:
      taken.add(key)
  if not duplicates:
    return codes
  residual = x[duplicates].astype(np.float64)
  for level in range(last):
    residual -= centres[level][codes[duplicates, level]]
  last_centres = centres[last].astype(np.float64)
  distances = (np.sum(last_centres ** 2, axis=1)[None, :] - 2.0 * residual @ last_centres.T)
  for row, index in enumerate(duplicates):
    prefix = tuple(codes[index, :last].tolist())
    for code in np.argsort(distances[row], kind="stable"):
      key = prefix + (int(code),)
      if key not in taken:
        codes[index, last] = code
        taken.add(key)
        break
  return codes

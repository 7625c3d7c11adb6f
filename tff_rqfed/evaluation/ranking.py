"""All-item top-k ranking and the headline ("correct") Recall/MRR/NDCG@k metrics.

Implements the evaluation protocol of the RQFedRec paper, Sec. 6.1.3: every user is
ranked against *all* items (no negative sampling), items the user already interacted
with in training (and, when testing, in validation) are masked out, and the top-k list
is scored with Recall@k, MRR@k and NDCG@k (k = 10 in the paper).

The metrics here are the textbook definitions; :mod:`tff_rqfed.evaluation.paper_compat`
reproduces the authors' reference code, whose MRR/NDCG differ (see that module), and
:func:`evaluate` reports both side by side.

Definitions, for a user with ground-truth set ``T`` (``|T| > 0``) and ranked list
``r_1..r_k``:

* ``recall@k = |{r_p in T}| / |T|``
* ``mrr@k    = 1 / p`` for the first (1-based) position ``p`` with ``r_p in T``, else 0
* ``ndcg@k   = DCG / IDCG`` with ``DCG = sum_{p: r_p in T} 1 / log2(p + 1)`` and
  ``IDCG = sum_{p=1}^{min(k, |T|)} 1 / log2(p + 1)``

Each metric is averaged over the users whose ground truth is non-empty; other users are
skipped. All functions are numpy-based; TensorFlow eager tensors are accepted as inputs
(they are converted with ``np.asarray``), so importing this module does not import TF.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = [
    "top_k_from_scores",
    "top_k_items",
    "truth_lists",
    "ranking_metrics",
    "evaluate",
]

_DEFAULT_CHUNK_SIZE = 1024


def _check_k(k, *, limit: int | None = None, what: str = "number of items") -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer, got k={k!r}")
  if limit is not None and k > limit:
    raise ValueError(f"k={k!r} exceeds the {what} ({limit})")
  return int(k)


def _as_pairs(pairs, *, name: str) -> np.ndarray:
  """Validates and returns an int64[n, 2] (user, item) array."""
  arr = np.asarray(pairs)
  if arr.size == 0:
    return np.zeros((0, 2), dtype=np.int64)
  if arr.ndim != 2 or arr.shape[1] != 2:
    raise ValueError(f"{name} must have shape [n, 2] (user, item), got shape {arr.shape}")
  if not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
  return arr.astype(np.int64, copy=False)


def _check_pair_bounds(pairs: np.ndarray, *, num_users: int, num_items: int | None, name: str):
  bad = (pairs[:, 0] < 0) | (pairs[:, 0] >= num_users)
  if num_items is not None:
    bad |= (pairs[:, 1] < 0) | (pairs[:, 1] >= num_items)
  else:
    bad |= pairs[:, 1] < 0
  if bad.any():
    user, item = pairs[np.argmax(bad)]
    limits = f"num_users={num_users}" + (f", num_items={num_items}" if num_items is not None else "")
    raise ValueError(f"{name} contains out-of-range pair (user={user}, item={item}) for {limits}")


def _sorted_exclusions(exclude, *, num_users: int, num_items: int):
  """Concatenates the exclusion arrays and sorts them by user.

  Returns (users: int64[n], items: int64[n]) sorted by user, for chunked slicing.
  """
  if isinstance(exclude, np.ndarray) and exclude.ndim == 2:
    # A single [n, 2] array passed instead of a sequence of arrays.
    exclude = (exclude,)
  parts = []
  for idx, pairs in enumerate(exclude):
    arr = _as_pairs(pairs, name=f"exclude[{idx}]")
    _check_pair_bounds(arr, num_users=num_users, num_items=num_items, name=f"exclude[{idx}]")
    parts.append(arr)
  if not parts:
    empty = np.zeros((0,), dtype=np.int64)
    return empty, empty
  allp = np.concatenate(parts, axis=0)
  order = np.argsort(allp[:, 0], kind="stable")
  return allp[order, 0], allp[order, 1]


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
  """int64[c, k] indices of the k largest entries per row of float32[c, I] ``scores``.

  Sorted by descending score, ties broken by the lower item index. Uses argpartition to
  find each row's k-th largest value, then exactly orders only the candidates at or above
  it, so the cost is O(c * I) plus a sort over roughly c * k candidates.
  """
  c, num_items = scores.shape
  if k == num_items:
    threshold = scores.min(axis=1)
  else:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    threshold = np.take_along_axis(scores, part, axis=1).min(axis=1)
  rows, cols = np.nonzero(scores >= threshold[:, None])  # row-major: cols ascending per row
  vals = scores[rows, cols]
  order = np.lexsort((cols, -vals, rows))  # by row, then score desc, then item asc
  counts = np.bincount(rows, minlength=c)  # >= k per row by construction
  starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
  take = order[starts[:, None] + np.arange(k)[None, :]]
  return cols[take]


def _top_k_chunked(
    score_chunk: Callable[[int, int], np.ndarray],
    *,
    num_users: int,
    num_items: int,
    exclude,
    k: int,
    chunk_size: int,
) -> np.ndarray:
  k = _check_k(k, limit=num_items)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got chunk_size={chunk_size!r}")
  ex_users, ex_items = _sorted_exclusions(exclude, num_users=num_users, num_items=num_items)
  out = np.empty((num_users, k), dtype=np.int32)
  for start in range(0, num_users, chunk_size):
    stop = min(start + chunk_size, num_users)
    chunk = np.array(score_chunk(start, stop), dtype=np.float32, copy=True)
    if np.isnan(chunk).any():
      row, col = np.argwhere(np.isnan(chunk))[0]
      raise ValueError(f"scores contain NaN (user={start + row}, item={col})")
    lo, hi = np.searchsorted(ex_users, [start, stop], side="left")
    chunk[ex_users[lo:hi] - start, ex_items[lo:hi]] = -np.inf
    out[start:stop] = _top_k_rows(chunk, k)
  return out


def top_k_from_scores(scores, *, exclude: Sequence = (), k: int = 10, chunk_size: int = _DEFAULT_CHUNK_SIZE) -> np.ndarray:
  """Top-k items per user from a dense score matrix, with per-user exclusions.

  Args:
    scores: float32[U, I] user-by-item scores (numpy array or eager tf.Tensor).
    exclude: sequence of int32[n, 2] (user, item) arrays; those items are masked (set to
      -inf) for that user, e.g. the train pairs (and the validation pairs when testing).
      A single [n, 2] array is accepted too.
    k: list length, 1 <= k <= I.
    chunk_size: users processed at a time (bounds the temporary memory).

  Returns:
    int32[U, k] item indices ranked by descending score; ties are broken by the lower
    item index (deterministic). A user with fewer than k unmasked items gets masked
    items at the tail (in index order).
  """
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must have shape [U, I], got shape {scores.shape}")
  num_users, num_items = scores.shape
  return _top_k_chunked(
      lambda a, b: scores[a:b],
      num_users=num_users,
      num_items=num_items,
      exclude=exclude,
      k=k,
      chunk_size=chunk_size,
  )


def top_k_items(
    user_embeddings,
    item_embeddings,
    *,
    exclude: Sequence = (),
    k: int = 10,
    chunk_size: int = _DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
  """Top-k items per user under dot-product scores ``user_embeddings @ item_embeddings.T``.

  Args:
    user_embeddings: float32[U, d].
    item_embeddings: float32[I, d].
    exclude, k, chunk_size: as in :func:`top_k_from_scores`.

  Returns:
    int32[U, k] item indices (descending score, ties to the lower index).
  """
  users = np.asarray(user_embeddings, dtype=np.float32)
  items = np.asarray(item_embeddings, dtype=np.float32)
  if users.ndim != 2 or items.ndim != 2:
    raise ValueError(
        f"embeddings must be 2-D, got user_embeddings {users.shape} and item_embeddings {items.shape}"
    )
  if users.shape[1] != items.shape[1]:
    raise ValueError(
        f"embedding sizes differ: user_embeddings {users.shape} vs item_embeddings {items.shape}"
    )
  items_t = np.ascontiguousarray(items.T)
  return _top_k_chunked(
      lambda a, b: users[a:b] @ items_t,
      num_users=users.shape[0],
      num_items=items.shape[0],
      exclude=exclude,
      k=k,
      chunk_size=chunk_size,
  )


def truth_lists(pairs, *, num_users: int) -> list[np.ndarray]:
  """Groups int32[n, 2] (user, item) pairs into per-user ground-truth item arrays.

  Returns:
    A list of length ``num_users``; entry u is an int64 array of u's distinct items,
    sorted ascending (empty if u has none).
  """
  if isinstance(num_users, bool) or not isinstance(num_users, (int, np.integer)) or num_users < 0:
    raise ValueError(f"num_users must be a non-negative integer, got num_users={num_users!r}")
  arr = _as_pairs(pairs, name="pairs")
  _check_pair_bounds(arr, num_users=num_users, num_items=None, name="pairs")
  arr = np.unique(arr, axis=0) if len(arr) else arr  # sorted by (user, item), distinct
  bounds = np.searchsorted(arr[:, 0], np.arange(num_users + 1), side="left")
  return [arr[bounds[u] : bounds[u + 1], 1].copy() for u in range(num_users)]


def _check_top_k(top_k, truth, k) -> tuple[np.ndarray, int]:
  top = np.asarray(top_k)
  if top.ndim != 2:
    raise ValueError(f"top_k must have shape [U, k], got shape {top.shape}")
  k = _check_k(k, limit=top.shape[1], what="number of ranked columns in top_k")
  if len(truth) != top.shape[0]:
    raise ValueError(f"truth has {len(truth)} users but top_k has {top.shape[0]} rows")
  return top[:, :k], k


def mean_over_users(k: int, recalls, mrrs, ndcgs) -> dict[str, float]:
  """``{recall@k, mrr@k, ndcg@k}``: each the mean of the per-user values (users with test items)."""
  if not recalls:
    raise ValueError("no user has a non-empty ground truth; metrics are undefined")
  return {
      f"recall@{k}": float(np.mean(recalls)),
      f"mrr@{k}": float(np.mean(mrrs)),
      f"ndcg@{k}": float(np.mean(ndcgs)),
  }


def ranking_metrics(top_k, truth, *, k: int = 10) -> dict[str, float]:
  """Textbook Recall@k, MRR@k and NDCG@k (paper Sec. 6.1.3), averaged over users.

  Args:
    top_k: int[U, >=k] ranked item indices (best first), e.g. from :func:`top_k_items`;
      only the first k columns are used. Items in a row are assumed distinct.
    truth: length-U sequence of per-user ground-truth item arrays (:func:`truth_lists`).
      Users with empty truth are skipped.
    k: cutoff.

  Returns:
    ``{'recall@k': ..., 'mrr@k': ..., 'ndcg@k': ...}`` with the actual k in the keys.

  Raises:
    ValueError: on a bad k, mismatched shapes, or when no user has any ground truth.
  """
  top, k = _check_top_k(top_k, truth, k)
  discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))  # position p -> 1/log2(p+1)
  ideal = np.cumsum(discounts)  # ideal[n-1] = IDCG with n relevant items
  recalls, mrrs, ndcgs = [], [], []
  for row, items in zip(top, truth):
    items = np.unique(np.asarray(items))
    if items.size == 0:
      continue
    hits = np.isin(row, items)
    recalls.append(hits.sum() / items.size)
    first = np.flatnonzero(hits)
    mrrs.append(1.0 / (first[0] + 1) if first.size else 0.0)
    ndcgs.append(discounts[hits].sum() / ideal[min(k, items.size) - 1])
  return mean_over_users(k, recalls, mrrs, ndcgs)


def evaluate(top_k, truth, *, k: int = 10) -> dict[str, dict[str, float]]:
  """Both metric sets for one ranking.

  Returns:
    ``{'correct': ranking_metrics(...), 'paper': paper_compat.paper_metrics(...)}``.
    The 'correct' set is the headline; 'paper' reproduces the authors' reference code.
  """
  from tff_rqfed.evaluation.paper_compat import paper_metrics

  return {
      "correct": ranking_metrics(top_k, truth, k=k),
      "paper": paper_metrics(top_k, truth, k=k),
  }

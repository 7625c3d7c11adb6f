"""MostPop: the non-personalised popularity baseline used as a reference row.

Scores every item by how many training interactions it has and gives every user the
same score row, so that with the user's own training items masked (as in the all-item
ranking protocol of paper Sec. 6.1.3, see :mod:`tff_rqfed.evaluation.ranking`) each user
is recommended the most popular items they have not yet seen. It is a sanity floor for
the federated models and a check that the evaluation pipeline is wired correctly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["item_counts", "most_popular_scores"]


def _check_size(value, *, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
  return int(value)


def item_counts(train_pairs, *, num_items: int) -> np.ndarray:
  """float32[I] number of (user, item) training pairs per item.

  Args:
    train_pairs: int32[n, 2] (user, item) training interactions.
    num_items: I, the size of the item vocabulary.
  """
  num_items = _check_size(num_items, name="num_items")
  pairs = np.asarray(train_pairs)
  if pairs.size == 0:
    return np.zeros((num_items,), dtype=np.float32)
  if pairs.ndim != 2 or pairs.shape[1] != 2:
    raise ValueError(f"train_pairs must have shape [n, 2] (user, item), got shape {pairs.shape}")
  items = pairs[:, 1].astype(np.int64)
  bad = (items < 0) | (items >= num_items)
  if bad.any():
    raise ValueError(f"train_pairs item {items[np.argmax(bad)]} is outside [0, num_items={num_items})")
  return np.bincount(items, minlength=num_items).astype(np.float32)


def most_popular_scores(train_pairs, *, num_users: int, num_items: int) -> np.ndarray:
  """float32[U, I] MostPop scores: every user's row is the item training counts.

  Args:
    train_pairs: int32[n, 2] (user, item) training interactions.
    num_users: U.
    num_items: I.

  Returns:
    A writable float32[U, I] array (row u = ``item_counts(train_pairs)`` for every u).
    Mask the user's training items when ranking, e.g.
    ``top_k_from_scores(scores, exclude=[train_pairs])``.
  """
  num_users = _check_size(num_users, name="num_users")
  pairs = np.asarray(train_pairs)
  counts = item_counts(pairs, num_items=num_items)  # also validates the shape
  if pairs.size:
    users = pairs[:, 0].astype(np.int64)
    bad = (users < 0) | (users >= num_users)
    if bad.any():
      raise ValueError(f"train_pairs user {users[np.argmax(bad)]} is outside [0, num_users={num_users})")
  return np.repeat(counts[None, :], num_users, axis=0)

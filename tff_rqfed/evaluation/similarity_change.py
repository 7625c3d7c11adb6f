"""How much item-item similarity the server sees change between rounds (Sec. 6.4.2, Fig. 4).

The paper measures the collaborative information a round transmits as the absolute difference of the
item-item cosine similarity between two consecutive rounds, on the item table the server can form
(FedMF: the mean item table; RQFedRec: every item rebuilt from the mean codebooks by Eq. 9), with the
items randomly grouped into 20 categories for display. Here: `random_item_groups` draws the groups
(a seeded permutation dealt round-robin, so group sizes differ by at most one) and `block_change`
(`block_means` of the change of `cosine_similarity`) gives the G x G matrix whose entry (a, b) is the mean of |cos_t(i, j) - cos_{t-1}(i, j)| over items i
of group a and j of group b (i != j), the figure's cells.
"""

from __future__ import annotations

import numpy as np

SIMILARITY_FILE = 'similarity_change.csv'  # a run's per-round block matrices (simulation)
GROUP_STREAM = 10  # default_rng([seed, GROUP_STREAM]) draws the groups (participation uses 9)


def random_item_groups(num_items: int, *, groups: int = 20, seed: int = 0) -> np.ndarray:
  """int[num_items]: each item's group in [0, groups), sizes within one of each other."""
  if not 1 <= groups <= num_items:
    raise ValueError(f'groups must be in [1, {num_items}] (the item count), got {groups!r}')
  order = np.random.default_rng([seed, GROUP_STREAM]).permutation(num_items)
  group_of_item = np.empty(num_items, np.int64)
  group_of_item[order] = np.arange(num_items) % groups
  return group_of_item


def cosine_similarity(table: np.ndarray) -> np.ndarray:
  """float64[I, I]: the cosine similarity of every pair of rows of `table: float[I, d]` (zero rows: 0)."""
  table = np.asarray(table, np.float64)
  norms = np.linalg.norm(table, axis=1, keepdims=True)
  unit = table / np.where(norms > 0, norms, 1.0)
  return unit @ unit.T


def block_means(change: np.ndarray, group_of_item: np.ndarray) -> np.ndarray:
  """float64[G, G]: the mean of `change: float[I, I]` over the item pairs (i != j) of each group pair."""
  groups = int(group_of_item.max()) + 1
  one_hot = np.eye(groups)[group_of_item]  # [I, G]
  sums = one_hot.T @ change @ one_hot
  sums[np.diag_indices(groups)] -= np.bincount(group_of_item, weights=np.diag(change), minlength=groups)
  sizes = one_hot.sum(axis=0)
  pairs = np.outer(sizes, sizes) - np.diag(sizes)  # ordered pairs i != j
  return sums / np.maximum(pairs, 1)


def block_change(previous: np.ndarray, current: np.ndarray, group_of_item: np.ndarray) -> np.ndarray:
  """float64[G, G]: mean |cos_current - cos_previous| over item pairs (i != j) of each group pair.

  Args:
    previous, current: float[I, d] item tables of two consecutive rounds.
    group_of_item: int[I] from `random_item_groups`.
  """
  if np.shape(previous) != np.shape(current):
    raise ValueError(f'item tables differ in shape: {np.shape(previous)} and {np.shape(current)}')
  return block_means(np.abs(cosine_similarity(current) - cosine_similarity(previous)), group_of_item)

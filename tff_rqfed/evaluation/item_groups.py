"""Metrics restricted to groups of test items: popularity buckets and cold items (issue 9).

The paper argues that ID-indexed aggregation fails on rare items (Sec. 1, 4), and that codes let
an item borrow from items that share them. Two groupings test that, on the same all-item ranking
as the headline metrics (Sec. 6.1.3: every user ranked against every item, train and validation
items masked):

* `popularity_groups`: head, torso and tail, the items that hold the first, second and last third
  of the training interactions when items are sorted by their training count (most popular first,
  ties by item index). With ML-100k's skew the head is a few dozen items and the tail over a
  thousand; equal thirds of interactions keep each bucket's test set a comparable size.
* cold items (`launchers.simulate --cold_item_ratio`, `data.protocols.hold_out_items`): items with no
  training or validation interaction at all; their test interactions form the group 'cold'.

`group_metrics` scores each group with the correct Recall/MRR/NDCG@k of `ranking.ranking_metrics`
over the users who have a test item in the group, each user's ground truth restricted to the group.
A hit is one of the group's test items in the user's top-k of the whole catalogue.
"""

from __future__ import annotations

import numpy as np

from tff_rqfed.evaluation import ranking

POPULARITY_GROUPS = ('head', 'torso', 'tail')


def popularity_groups(train_pairs, num_items: int) -> dict[str, np.ndarray]:
  """{'head', 'torso', 'tail'} -> bool[num_items]: the thirds of the training interactions.

  An item belongs to the third in which its own interactions start when items are laid end to end,
  most popular first; items without training interactions are in the tail.
  """
  train_pairs = np.asarray(train_pairs)
  if num_items < 1:
    raise ValueError(f'num_items must be >= 1, got {num_items!r}')
  counts = np.bincount(train_pairs[:, 1], minlength=num_items) if len(train_pairs) else np.zeros(
      num_items, np.int64)
  if len(counts) > num_items:
    raise ValueError(f'train item index {len(counts) - 1} is out of range for {num_items} items')
  order = np.lexsort((np.arange(num_items), -counts))  # by count descending, then by index
  before = np.concatenate([[0], np.cumsum(counts[order])[:-1]]) / max(int(counts.sum()), 1)
  third = np.minimum((before * 3).astype(np.int64), 2)
  third[counts[order] == 0] = 2
  groups = {}
  for index, name in enumerate(POPULARITY_GROUPS):
    mask = np.zeros(num_items, bool)
    mask[order[third == index]] = True
    groups[name] = mask
  return groups


def group_metrics(top_k, truth_pairs, groups: dict[str, np.ndarray], *, num_users: int,
                  k: int) -> dict[str, dict]:
  """Per group: `items` (its size), `users` (users with a test item in it) and the correct metrics.

  Args:
    top_k: int[U, >=k] each user's ranking of the whole catalogue (train/validation items masked).
    truth_pairs: int[n, 2] (user, item) test pairs.
    groups: name -> bool[num_items] membership.
    num_users, k: as in `ranking`.

  Returns:
    name -> {'items': int, 'users': int, 'test_pairs': int, 'recall@k', 'mrr@k', 'ndcg@k'}; the metric
    entries are None when no user has a test item in the group.
  """
  truth_pairs = np.asarray(truth_pairs)
  out = {}
  for name, mask in groups.items():
    mask = np.asarray(mask, bool)
    pairs = truth_pairs[mask[truth_pairs[:, 1]]] if len(truth_pairs) else truth_pairs
    truth = ranking.truth_lists(pairs, num_users=num_users)
    users = sum(1 for items in truth if len(items))
    entry = {'items': int(mask.sum()), 'users': users, 'test_pairs': int(len(pairs))}
    if users:
      entry.update(ranking.ranking_metrics(top_k, truth, k=k))
    else:
      entry.update({f'{metric}@{k}': None for metric in ('recall', 'mrr', 'ndcg')})
    out[name] = entry
  return out

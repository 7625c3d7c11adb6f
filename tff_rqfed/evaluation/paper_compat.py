"""Recall/MRR/NDCG@k exactly as computed by the RQFedRec authors' reference code.

The paper (Sec. 6.1.3) reports Recall@10, MRR@10 and NDCG@10 with all-item ranking. The
authors' metric code (their ``utils/metric.py``) differs from the textbook definitions
implemented in :mod:`tff_rqfed.evaluation.ranking` in two ways; :func:`paper_metrics`
reproduces both so that our numbers can be compared with the published tables.

Quirk 1 -- positions come from a Python ``set``, not from the ranking.
  The reference code does ``top = set(ranked_list[0:k])`` and then walks
  ``enumerate(top)``. The "position" of an item is therefore its position in CPython's
  set iteration order, which is the order of hash-table slots: for small non-negative
  ints ``hash(i) == i``, so an item lands in slot ``i & mask`` (``mask = table size - 1``,
  8 slots for up to 4 items, larger tables after resizes), with linear/perturbed probing
  on collisions -- which is why the insertion (rank) order still matters when ids collide
  modulo the table size. E.g. ranked ``[40, 3, 17]`` iterates as ``[40, 17, 3]``
  (slots 0, 1, 3 of an 8-slot table). MRR and NDCG use these positions; Recall does not
  (it only uses ``len(top & truth)``), so Recall equals the textbook value.

Quirk 2 -- NDCG is normalised by the number of hits.
  For each hit at set position ``i`` (0-based) the code adds ``1/log2(i+2)`` to DCG and
  ``1/log2(h+2)`` to IDCG, where ``h`` counts the hits seen so far. IDCG is thus the ideal
  DCG of the *retrieved* relevant items, not of ``min(k, |T|)`` items: a list whose only
  hit sits at set position 0 scores NDCG 1.0 however many relevant items were missed.
  A user without hits gets MRR ``1/1e20`` (~0) and NDCG ``0/(0+1e-20) = 0``.

Why the numbers depend on the internal item index.
  Because set order is driven by ``hash(item) == item``, *which integers* the items are
  mapped to changes MRR/NDCG even for an identical ranking. The authors index ML-100k items
  as ``original id - 1``; our MovieLens loader uses the same mapping, so on ML-100k the
  paper-compatible values line up with theirs. Any re-indexing (e.g. by popularity or by
  order of first appearance) leaves the textbook metrics unchanged but shifts these.

The set is built literally, from the ranked list in rank order, with the running CPython's
``set`` type, which reproduces the iteration order exactly (hash-slot collisions and table
resizes included) as long as CPython's set implementation matches the authors'.
"""

from __future__ import annotations

import math

import numpy as np

from tff_rqfed.evaluation.ranking import _check_top_k, mean_over_users

__all__ = ["paper_metrics"]


def _user_metrics(ranked: list, truth: set, k: int) -> tuple[float, float, float]:
  """One user's (recall, mrr, ndcg), following the reference code step by step."""
  top = set(ranked[0:k])  # iteration order = hash-slot order, not rank order
  recall = len(top & truth) / len(truth)

  mrr = 1 / 1e20
  for index, item in enumerate(top):
    if item in truth:
      mrr = 1 / (index + 1)
      break

  dcg, idcg, hits = 0.0, 0.0, 0
  for index, item in enumerate(top):
    if item in truth:
      dcg += 1 / math.log2(index + 2)
      idcg += 1 / math.log2(hits + 2)
      hits += 1
  ndcg = dcg / (idcg + 1e-20)
  return recall, mrr, ndcg


def paper_metrics(top_k, truth, *, k: int = 10) -> dict[str, float]:
  """Recall@k, MRR@k and NDCG@k as in the authors' reference code (see module docstring).

  Args:
    top_k: int[U, >=k] ranked item indices (best first); the first k columns are used.
    truth: length-U sequence of per-user ground-truth item arrays; users whose truth is
      empty are skipped.
    k: cutoff.

  Returns:
    ``{'recall@k': ..., 'mrr@k': ..., 'ndcg@k': ...}`` (same keys as
    :func:`tff_rqfed.evaluation.ranking.ranking_metrics`), each the mean over users.
  """
  top, k = _check_top_k(top_k, truth, k)
  recalls, mrrs, ndcgs = [], [], []
  for row, items in zip(top, truth):
    truth_set = set(np.asarray(items).ravel().tolist())
    if not truth_set:
      continue
    recall, mrr, ndcg = _user_metrics(row.tolist(), truth_set, k)
    recalls.append(recall)
    mrrs.append(mrr)
    ndcgs.append(ndcg)
  return mean_over_users(k, recalls, mrrs, ndcgs)

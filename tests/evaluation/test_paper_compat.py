"""Tests for tff_rqfed.evaluation.paper_compat (the authors' metric code, Sec. 6.1.3)."""

import math

import numpy as np
import pytest

from tff_rqfed.evaluation.paper_compat import paper_metrics
from tff_rqfed.evaluation.ranking import ranking_metrics


def test_set_iteration_order_differs_from_ranking_hand_computed():
  # Ranked [40, 3, 17]; a 3-element set has 8 slots, hash(i) == i, slot = i & 7:
  # 40 & 7 = 0, 17 & 7 = 1, 3 & 7 = 3  ->  iteration order 40, 17, 3.
  # list(set([40, 3, 17])) == [40, 17, 3]
  top_k = np.array([[40, 3, 17], [40, 3, 17]])
  truth = [np.array([3]), np.array([17])]
  # User 0: item 3 is rank 2 but set index 2 -> MRR 1/3, NDCG (1/log2 4)/(1/log2 2) = 0.5.
  # User 1: item 17 is rank 3 but set index 1 -> MRR 1/2, NDCG (1/log2 3)/(1/log2 2) = 0.6309297535714575.
  paper = paper_metrics(top_k[:1], truth[:1], k=3)
  assert paper["mrr@3"] == pytest.approx(0.3333333333333333)
  assert paper["ndcg@3"] == pytest.approx(0.5)
  paper = paper_metrics(top_k[1:], truth[1:], k=3)
  assert paper["mrr@3"] == pytest.approx(0.5)
  assert paper["ndcg@3"] == pytest.approx(0.6309297535714575)
  # The textbook metrics use the ranking: user 0 -> MRR 1/2, NDCG 1/log2 3; user 1 -> 1/3, 1/log2 4.
  correct = ranking_metrics(top_k, truth, k=3)
  assert correct["mrr@3"] == pytest.approx((0.5 + 0.3333333333333333) / 2)
  assert correct["ndcg@3"] == pytest.approx((0.6309297535714575 + 0.5) / 2)
  paper = paper_metrics(top_k, truth, k=3)
  assert paper["mrr@3"] == pytest.approx((0.3333333333333333 + 0.5) / 2)
  assert paper["ndcg@3"] == pytest.approx((0.5 + 0.6309297535714575) / 2)


def test_hash_slot_collision_makes_order_depend_on_insertion_order():
  # 8 & 7 == 0 & 7 == 0: whichever is inserted first takes slot 0, the other probes to slot 1.
  # list(set([8, 0])) == [8, 0];  list(set([0, 8])) == [0, 8]
  truth = [np.array([0])]
  assert paper_metrics(np.array([[8, 0]]), truth, k=2)["mrr@2"] == pytest.approx(0.5)
  assert paper_metrics(np.array([[0, 8]]), truth, k=2)["mrr@2"] == pytest.approx(1.0)


def test_paper_ndcg_is_one_when_the_only_hit_is_first_but_correct_ndcg_is_lower():
  # Ranked [5, 6, 7] iterates as a set in the same order (slots 5, 6, 7). One hit (5) at
  # index 0: paper DCG = IDCG = 1 -> NDCG 1.0. Correct IDCG over min(k, |T|) = 3 positions:
  # 1 + 1/log2 3 + 1/log2 4 = 2.1309297535714575 -> NDCG 0.46928...
  top_k = np.array([[5, 6, 7]])
  truth = [np.array([5, 100, 200])]
  assert paper_metrics(top_k, truth, k=3)["ndcg@3"] == pytest.approx(1.0)
  correct = ranking_metrics(top_k, truth, k=3)["ndcg@3"]
  assert correct == pytest.approx(1 / 2.1309297535714575)
  assert correct < 1.0


def test_paper_user_without_hit_gets_near_zero_mrr_and_zero_ndcg():
  metrics = paper_metrics(np.array([[1, 2, 3]]), [np.array([9])], k=3)
  assert metrics["recall@3"] == 0.0
  assert metrics["mrr@3"] == pytest.approx(1e-20, rel=1e-9)
  assert metrics["ndcg@3"] == 0.0


def test_paper_metrics_skip_users_with_empty_truth():
  top_k = np.array([[1, 2, 3], [1, 2, 3]])
  truth = [np.array([], dtype=np.int64), np.array([1])]
  assert paper_metrics(top_k, truth, k=3) == pytest.approx({"recall@3": 1.0, "mrr@3": 1.0, "ndcg@3": 1.0})


def test_paper_recall_equals_correct_recall_on_random_rankings():
  rng = np.random.default_rng(0)
  num_users, num_items, k = 60, 5000, 10  # large ids: plenty of hash-slot collisions
  top_k = np.stack([rng.choice(num_items, size=k, replace=False) for _ in range(num_users)])
  truth = [
      np.concatenate([rng.choice(top_k[u], size=rng.integers(0, 4), replace=False),
                      rng.choice(num_items, size=rng.integers(0, 20))])
      for u in range(num_users)
  ]
  paper = paper_metrics(top_k, truth, k=k)
  correct = ranking_metrics(top_k, truth, k=k)
  assert paper["recall@10"] == pytest.approx(correct["recall@10"], rel=1e-12)
  assert paper["recall@10"] > 0


def test_paper_metrics_match_literal_reference_loop():
  # Re-states the authors' per-user code verbatim on random data.
  rng = np.random.default_rng(1)
  top_k = np.stack([rng.choice(2000, size=10, replace=False) for _ in range(30)])
  truth = [np.unique(np.concatenate([top_k[u, rng.integers(0, 10, 2)], rng.integers(0, 2000, 5)]))
           for u in range(30)]
  recalls, mrrs, ndcgs = [], [], []
  for ranked, items in zip(top_k.tolist(), truth):
    test, top = set(items.tolist()), set(ranked[0:10])
    recalls.append(len(top & test) / len(test))
    mrr = 1 / 1e20
    for index, item in enumerate(top):
      if item in test:
        mrr = 1 / (index + 1)
        break
    dcg = idcg = 0.0
    hit = 0
    for index, item in enumerate(top):
      if item in test:
        dcg += 1 / math.log2(index + 2)
        idcg += 1 / math.log2(hit + 2)
        hit += 1
    mrrs.append(mrr)
    ndcgs.append(dcg / (idcg + 1e-20))
  metrics = paper_metrics(top_k, truth, k=10)
  assert metrics == pytest.approx(
      {"recall@10": np.mean(recalls), "mrr@10": np.mean(mrrs), "ndcg@10": np.mean(ndcgs)}, rel=1e-12
  )


def test_paper_metrics_rejects_k_larger_than_ranked_list():
  with pytest.raises(ValueError, match="k=11"):
    paper_metrics(np.zeros((1, 10), dtype=np.int32), [np.array([0])], k=11)

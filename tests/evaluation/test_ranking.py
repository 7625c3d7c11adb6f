"""Tests for tff_rqfed.evaluation.ranking (all-item top-k and correct metrics, Sec. 6.1.3)."""

import math

import numpy as np
import pytest

from tff_rqfed.evaluation.ranking import (
    evaluate,
    ranking_metrics,
    top_k_from_scores,
    top_k_items,
    truth_lists,
)

INV_LOG2_3 = 1 / math.log2(3)  # discount of rank 2: 0.6309297535714575


# --------------------------------------------------------------------------- top-k


def test_top_k_from_scores_ranks_by_descending_score():
  scores = np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 1.0, 3.0, 2.0]], dtype=np.float32)
  top = top_k_from_scores(scores, k=3)
  assert top.dtype == np.int32
  np.testing.assert_array_equal(top, [[1, 2, 3], [0, 2, 3]])


def test_top_k_from_scores_masks_excluded_items_per_user():
  scores = np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 1.0, 3.0, 2.0]], dtype=np.float32)
  train = np.array([[0, 1], [1, 0]], dtype=np.int32)  # user 0 saw item 1, user 1 saw item 0
  valid = np.array([[1, 2]], dtype=np.int32)  # user 1 validated on item 2
  top = top_k_from_scores(scores, exclude=[train, valid], k=2)
  np.testing.assert_array_equal(top, [[2, 3], [3, 1]])


def test_top_k_from_scores_masking_does_not_modify_input():
  scores = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)
  before = scores.copy()
  top_k_from_scores(scores, exclude=[np.array([[0, 1]])], k=1)
  np.testing.assert_array_equal(scores, before)


def test_top_k_from_scores_breaks_ties_by_lower_item_index():
  scores = np.array([[1.0, 3.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
  np.testing.assert_array_equal(top_k_from_scores(scores, k=4), [[1, 2, 4, 0], [0, 1, 2, 3]])


def test_top_k_from_scores_tie_at_cutoff_keeps_lower_index():
  # Items 0, 2 and 3 tie for the last slot; the lowest index (0) must win.
  scores = np.array([[2.0, 5.0, 2.0, 2.0]], dtype=np.float32)
  np.testing.assert_array_equal(top_k_from_scores(scores, k=2), [[1, 0]])


def test_top_k_from_scores_puts_masked_items_last_when_too_few_remain():
  scores = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
  top = top_k_from_scores(scores, exclude=[np.array([[0, 0], [0, 1]])], k=3)
  np.testing.assert_array_equal(top, [[2, 0, 1]])


def test_top_k_from_scores_is_independent_of_chunk_size():
  rng = np.random.default_rng(0)
  scores = np.round(rng.standard_normal((37, 50)), 1).astype(np.float32)  # many ties
  exclude = [np.stack([rng.integers(0, 37, 300), rng.integers(0, 50, 300)], axis=1)]
  masked = scores.copy()
  masked[exclude[0][:, 0], exclude[0][:, 1]] = -np.inf
  expected = np.argsort(-masked, axis=1, kind="stable")[:, :7]
  for chunk_size in (1, 5, 64):
    np.testing.assert_array_equal(
        top_k_from_scores(scores, exclude=exclude, k=7, chunk_size=chunk_size), expected
    )


def test_top_k_from_scores_accepts_a_tf_tensor():
  tf = pytest.importorskip("tensorflow")
  scores = tf.constant([[0.2, 0.8, 0.5]], dtype=tf.float32)
  np.testing.assert_array_equal(top_k_from_scores(scores, k=2), [[1, 2]])


@pytest.mark.parametrize("bad_k", [0, -1, 5, 2.0, True])
def test_top_k_from_scores_rejects_bad_k(bad_k):
  scores = np.zeros((2, 4), dtype=np.float32)
  with pytest.raises(ValueError, match=f"k={bad_k!r}"):
    top_k_from_scores(scores, k=bad_k)


def test_top_k_from_scores_rejects_out_of_range_exclusion():
  scores = np.zeros((2, 4), dtype=np.float32)
  with pytest.raises(ValueError, match=r"user=1, item=4"):
    top_k_from_scores(scores, exclude=[np.array([[0, 0], [1, 4]])], k=1)


def test_top_k_from_scores_rejects_nan_scores():
  scores = np.array([[0.0, np.nan]], dtype=np.float32)
  with pytest.raises(ValueError, match=r"NaN \(user=0, item=1\)"):
    top_k_from_scores(scores, k=1)


def test_top_k_items_uses_dot_product_scores():
  users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
  items = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 3.0]], dtype=np.float32)
  # scores = [[1, 3, 2], [2, 0, 3]]
  np.testing.assert_array_equal(top_k_items(users, items, k=2), [[1, 2], [2, 0]])
  np.testing.assert_array_equal(
      top_k_items(users, items, exclude=[np.array([[0, 1]])], k=2), [[2, 0], [2, 0]]
  )


def test_top_k_items_rejects_mismatched_embedding_sizes():
  with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
    top_k_items(np.zeros((2, 3)), np.zeros((4, 2)), k=1)


# --------------------------------------------------------------------------- truth


def test_truth_lists_groups_sorts_and_deduplicates_per_user():
  pairs = np.array([[2, 5], [0, 3], [2, 1], [2, 5]], dtype=np.int32)
  truth = truth_lists(pairs, num_users=4)
  assert len(truth) == 4
  np.testing.assert_array_equal(truth[0], [3])
  assert truth[1].size == 0
  np.testing.assert_array_equal(truth[2], [1, 5])
  assert truth[3].size == 0


def test_truth_lists_rejects_user_outside_num_users():
  with pytest.raises(ValueError, match=r"user=3"):
    truth_lists(np.array([[3, 0]]), num_users=3)


# --------------------------------------------------------------------------- metrics


def test_ranking_metrics_hand_computed_three_users_and_one_skipped():
  top_k = np.array([[5, 1, 7], [2, 5, 6], [0, 1, 2], [0, 1, 2]])
  truth = [
      np.array([1, 9]),  # hit at rank 2: R=1/2, MRR=1/2, NDCG=(1/log2 3)/(1 + 1/log2 3)
      np.array([2, 4, 6, 8, 9]),  # |T|=5 > k=3; hits at ranks 1, 3: R=2/5, MRR=1,
      #                             NDCG=(1 + 1/2)/(1 + 1/log2 3 + 1/2)  (IDCG over k=3)
      np.array([], dtype=np.int64),  # no truth: skipped
      np.array([7]),  # no hit: all zero
  ]
  ndcg0 = INV_LOG2_3 / (1 + INV_LOG2_3)  # 0.38685280723
  ndcg1 = 1.5 / (1.5 + INV_LOG2_3)  # 0.70391809...
  metrics = ranking_metrics(top_k, truth, k=3)
  assert set(metrics) == {"recall@3", "mrr@3", "ndcg@3"}
  assert metrics["recall@3"] == pytest.approx((0.5 + 0.4 + 0.0) / 3)  # 0.3
  assert metrics["mrr@3"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # 0.5
  assert metrics["ndcg@3"] == pytest.approx((ndcg0 + ndcg1 + 0.0) / 3)
  assert metrics["ndcg@3"] == pytest.approx(0.3635903, abs=1e-7)


def test_ranking_metrics_uses_only_first_k_columns():
  top_k = np.array([[0, 1, 2, 3]])
  truth = [np.array([3])]
  assert ranking_metrics(top_k, truth, k=3) == {"recall@3": 0.0, "mrr@3": 0.0, "ndcg@3": 0.0}
  assert ranking_metrics(top_k, truth, k=4)["mrr@4"] == pytest.approx(0.25)


def test_ranking_metrics_perfect_ranking_scores_one():
  metrics = ranking_metrics(np.array([[4, 2]]), [np.array([2, 4])], k=2)
  assert metrics == pytest.approx({"recall@2": 1.0, "mrr@2": 1.0, "ndcg@2": 1.0})


@pytest.mark.parametrize("bad_k", [0, 4])
def test_ranking_metrics_rejects_k_outside_ranked_columns(bad_k):
  with pytest.raises(ValueError, match=f"k={bad_k}"):
    ranking_metrics(np.zeros((1, 3), dtype=np.int32), [np.array([0])], k=bad_k)


def test_ranking_metrics_rejects_truth_of_wrong_length():
  with pytest.raises(ValueError, match="truth has 1 users but top_k has 2 rows"):
    ranking_metrics(np.zeros((2, 3), dtype=np.int32), [np.array([0])], k=3)


def test_ranking_metrics_rejects_all_empty_truth():
  with pytest.raises(ValueError, match="non-empty"):
    ranking_metrics(np.zeros((1, 3), dtype=np.int32), [np.array([], dtype=np.int64)], k=3)


def test_evaluate_reports_correct_and_paper_sets_with_same_keys():
  # One hit (5) at rank 1 of 3 relevant items: textbook NDCG 1 / (1 + 1/log2 3 + 1/2); the
  # authors' code normalises by the hits retrieved, so its NDCG is 1.
  result = evaluate(np.array([[5, 6, 7]]), [np.array([5, 100, 200])], k=3)
  assert set(result) == {"correct", "paper"}
  assert set(result["correct"]) == set(result["paper"]) == {"recall@3", "mrr@3", "ndcg@3"}
  assert result["correct"] == pytest.approx(
      {"recall@3": 1 / 3, "mrr@3": 1.0, "ndcg@3": 1 / (1 + INV_LOG2_3 + 0.5)})
  assert result["paper"] == pytest.approx({"recall@3": 1 / 3, "mrr@3": 1.0, "ndcg@3": 1.0})

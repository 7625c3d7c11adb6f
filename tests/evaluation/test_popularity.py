"""Tests for tff_rqfed.evaluation.popularity (MostPop reference row)."""

import numpy as np
import pytest

from tff_rqfed.evaluation.popularity import item_counts, most_popular_scores
from tff_rqfed.evaluation.ranking import top_k_from_scores


def test_item_counts_counts_training_pairs_per_item():
  train = np.array([[0, 2], [1, 2], [1, 0], [2, 2]], dtype=np.int32)
  np.testing.assert_array_equal(item_counts(train, num_items=4), [1.0, 0.0, 3.0, 0.0])


def test_most_popular_scores_gives_every_user_the_count_row():
  train = np.array([[0, 2], [1, 2], [1, 0]], dtype=np.int32)
  scores = most_popular_scores(train, num_users=3, num_items=3)
  assert scores.shape == (3, 3) and scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [[1, 0, 2]] * 3)
  scores[0, 0] = 5.0  # a real, writable array, not a broadcast view
  assert scores[1, 0] == 1.0


def test_most_popular_with_train_masked_recommends_most_popular_unseen_items():
  train = np.array([[0, 2], [1, 2], [1, 0], [2, 2], [2, 1], [0, 1]], dtype=np.int32)
  # counts = [1, 2, 3, 0]
  scores = most_popular_scores(train, num_users=3, num_items=4)
  top = top_k_from_scores(scores, exclude=[train], k=2)
  np.testing.assert_array_equal(top, [[0, 3], [1, 3], [0, 3]])


def test_most_popular_scores_rejects_out_of_range_ids():
  with pytest.raises(ValueError, match=r"item 7"):
    most_popular_scores(np.array([[0, 7]]), num_users=1, num_items=3)
  with pytest.raises(ValueError, match=r"user 4"):
    most_popular_scores(np.array([[4, 0]]), num_users=2, num_items=3)
  with pytest.raises(ValueError, match=r"num_users=0"):
    most_popular_scores(np.array([[0, 0]]), num_users=0, num_items=3)

"""Popularity thirds of the training interactions and metrics restricted to a group of test items."""

import numpy as np
import pytest

from tff_rqfed.evaluation import item_groups
from tff_rqfed.evaluation import ranking


def _train(counts):
  """Training pairs giving item i `counts[i]` interactions (users 0, 1, ...)."""
  return np.array([(u, i) for i, c in enumerate(counts) for u in range(c)], np.int32)


def test_groups_are_the_thirds_of_the_training_interactions_most_popular_first():
  # 12 interactions: item 2 (6) starts the head; item 0 (3) starts at 6/12, the torso; items 3 (2) at
  # 9/12 and 1 (1) at 11/12 are the tail, as is item 4 without interactions.
  groups = item_groups.popularity_groups(_train([3, 1, 6, 2, 0]), num_items=5)
  assert {name: np.flatnonzero(mask).tolist() for name, mask in groups.items()} == {
      'head': [2], 'torso': [0], 'tail': [1, 3, 4]}


def test_every_item_is_in_exactly_one_group_and_ties_go_by_index():
  groups = item_groups.popularity_groups(_train([2, 2, 2]), num_items=3)
  assert sum(mask.astype(int) for mask in groups.values()).tolist() == [1, 1, 1]
  assert [np.flatnonzero(groups[name]).tolist() for name in item_groups.POPULARITY_GROUPS] == [[0], [1], [2]]


def test_out_of_range_item_is_refused_quoting_it():
  with pytest.raises(ValueError, match='item index 5 is out of range for 3 items'):
    item_groups.popularity_groups(np.array([[0, 5]]), num_items=3)


def test_group_metrics_restrict_each_users_truth_to_the_group():
  top_k = np.array([[0, 1, 2], [3, 4, 0]])
  test = np.array([[0, 0], [0, 4], [1, 4], [1, 2]])  # user 0: items 0, 4; user 1: items 4, 2
  groups = {'a': np.array([True, False, True, False, False]),  # items 0, 2
            'b': np.array([False, False, False, False, True]),  # item 4
            'none': np.zeros(5, bool)}
  out = item_groups.group_metrics(top_k, test, groups, num_users=2, k=3)
  # Group a: user 0's truth {0} (hit at 1), user 1's {2} (missed).
  expected_a = ranking.ranking_metrics(top_k, [np.array([0]), np.array([2])], k=3)
  assert out['a'] == {'items': 2, 'users': 2, 'test_pairs': 2, **expected_a}
  assert out['a']['recall@3'] == pytest.approx(0.5)
  # Group b: user 0 misses item 4, user 1 ranks it second.
  assert out['b']['users'] == 2 and out['b']['recall@3'] == pytest.approx(0.5)
  assert out['b']['mrr@3'] == pytest.approx(0.25)
  assert out['none'] == {'items': 0, 'users': 0, 'test_pairs': 0, 'recall@3': None, 'mrr@3': None,
                         'ndcg@3': None}

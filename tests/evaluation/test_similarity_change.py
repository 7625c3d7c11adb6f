"""Fig. 4's measure: block means of |change of item-item cosine similarity| over random item groups."""

import numpy as np
import pytest

from tff_rqfed.evaluation import similarity_change


def test_groups_partition_the_items_evenly_and_depend_on_the_seed():
  groups = similarity_change.random_item_groups(103, groups=20, seed=1)
  sizes = np.bincount(groups, minlength=20)
  assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1
  assert not np.array_equal(groups, similarity_change.random_item_groups(103, groups=20, seed=2))


def test_block_change_is_the_mean_absolute_cosine_change_over_item_pairs_of_each_group_pair():
  rng = np.random.default_rng(0)
  before, after = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  groups = np.array([0, 0, 1, 1, 1, 0])
  cos = lambda t: (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
  change = np.abs(cos(after) - cos(before))
  blocks = similarity_change.block_change(before, after, groups)
  a, b = [0, 1, 5], [2, 3, 4]
  assert blocks[0, 1] == pytest.approx(change[np.ix_(a, b)].mean())
  off_diagonal = [change[i, j] for i in a for j in a if i != j]
  assert blocks[0, 0] == pytest.approx(np.mean(off_diagonal))  # an item with itself never counts
  np.testing.assert_allclose(blocks, blocks.T)


def test_a_table_that_only_rescales_rows_changes_no_similarity():
  table = np.random.default_rng(1).normal(size=(8, 3))
  blocks = similarity_change.block_change(table, table * np.arange(1, 9)[:, None],
                                          similarity_change.random_item_groups(8, groups=4))
  np.testing.assert_allclose(blocks, 0.0, atol=1e-12)


def test_bad_group_count_and_shape_mismatch_are_refused_quoting_them():
  with pytest.raises(ValueError, match=r'groups must be in \[1, 5\].*got 6'):
    similarity_change.random_item_groups(5, groups=6)
  with pytest.raises(ValueError, match=r'\(3, 2\) and \(4, 2\)'):
    similarity_change.block_change(np.ones((3, 2)), np.ones((4, 2)), np.zeros(3, int))

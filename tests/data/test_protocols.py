"""Tests for tff_rqfed.data.protocols (Sec. 6.1 evaluation protocol)."""

import numpy as np
import pytest

from tff_rqfed.data.interactions import Dataset
from tff_rqfed.data.protocols import (PROTOCOLS, make_split, split_paper,
                                      split_per_user)


def synthetic(*, name='toy', num_users=30, num_items=50, seed=0):
  """Every user rates a random number (1..20) of distinct items."""
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(num_users):
    k = int(rng.integers(1, 21))
    users += [u] * k
    items += rng.choice(num_items, size=k, replace=False).tolist()
  order = rng.permutation(len(users))
  return Dataset(name=name, users=np.array(users, np.int32)[order],
                 items=np.array(items, np.int32)[order], ratings=None, timestamps=None,
                 user_ids=np.array([str(u) for u in range(num_users)], object),
                 item_ids=np.array([str(i) for i in range(num_items)], object))


def as_set(pairs):
  return set(map(tuple, pairs.tolist()))


def assert_partition_of_dataset(split, ds):
  parts = [as_set(split.train), as_set(split.valid), as_set(split.test)]
  assert sum(map(len, parts)) == len(split.train) + len(split.valid) + len(split.test)
  assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
  assert parts[0] | parts[1] | parts[2] == set(zip(ds.users.tolist(), ds.items.tolist()))


@pytest.fixture(scope='module')
def ml100k(cached_movielens):
  return cached_movielens('ml-100k')


def test_paper_protocol_on_ml100k_gives_72000_train_8000_valid_20000_test(ml100k):
  split = split_paper(ml100k, seed=0)
  assert (len(split.train), len(split.valid), len(split.test)) == (72000, 8000, 20000)
  assert (split.num_users, split.num_items) == (943, 1682)
  for part in (split.train, split.valid, split.test):
    assert part.dtype == np.int32 and part.shape[1] == 2


def test_paper_protocol_uses_first_20000_rows_as_test(ml100k):
  split = split_paper(ml100k, seed=0)
  expected = np.stack([ml100k.users[:20000], ml100k.items[:20000]], axis=1)
  np.testing.assert_array_equal(split.test, expected)


def test_paper_protocol_test_set_is_independent_of_seed(ml100k):
  a, b = split_paper(ml100k, seed=0), split_paper(ml100k, seed=1)
  np.testing.assert_array_equal(a.test, b.test)
  assert as_set(a.valid) != as_set(b.valid)


def test_paper_protocol_ml100k_parts_are_disjoint_and_cover_dataset(ml100k):
  assert_partition_of_dataset(split_paper(ml100k, seed=3), ml100k)


def test_per_user_protocol_on_ml100k_is_disjoint_and_covers_dataset(ml100k):
  split = split_per_user(ml100k, seed=0)
  assert_partition_of_dataset(split, ml100k)
  assert len(split.test) == 20000   # every ML-100k user has >= 20 ratings


@pytest.mark.parametrize('protocol', PROTOCOLS)
def test_same_seed_gives_identical_split(protocol):
  ds = synthetic()
  a, b = make_split(ds, protocol=protocol, seed=7), make_split(ds, protocol=protocol, seed=7)
  for x, y in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
    np.testing.assert_array_equal(x, y)
  c = make_split(ds, protocol=protocol, seed=8)
  assert as_set(a.test) != as_set(c.test)


def test_paper_protocol_on_other_datasets_is_random_8_2_then_10_percent_valid():
  ds = synthetic(name='not-ml-100k', num_users=200)
  split = split_paper(ds, seed=0)
  n = ds.num_interactions
  n_test = int(np.floor(0.2 * n + 0.5))
  n_valid = int(np.floor(0.1 * (n - n_test) + 0.5))
  assert (len(split.test), len(split.valid), len(split.train)) == (
      n_test, n_valid, n - n_test - n_valid)
  assert_partition_of_dataset(split, ds)
  first = np.stack([ds.users[:n_test], ds.items[:n_test]], axis=1)
  assert as_set(split.test) != as_set(first)   # random, not the first rows


def test_per_user_protocol_splits_each_user_80_20_then_10_percent_valid():
  ds = synthetic(num_users=100)
  split = split_per_user(ds, seed=0)
  assert_partition_of_dataset(split, ds)
  counts = np.bincount(ds.users, minlength=ds.num_users)
  n_train = np.bincount(split.train[:, 0], minlength=ds.num_users)
  n_valid = np.bincount(split.valid[:, 0], minlength=ds.num_users)
  n_test = np.bincount(split.test[:, 0], minlength=ds.num_users)
  expected_test = np.minimum(np.floor(0.2 * counts + 0.5), np.maximum(counts - 1, 0))
  np.testing.assert_array_equal(n_test, expected_test)
  expected_valid = np.minimum(np.floor(0.1 * (counts - n_test) + 0.5),
                              np.maximum(counts - n_test - 1, 0))
  np.testing.assert_array_equal(n_valid, expected_valid)
  assert (n_train[counts >= 1] >= 1).all()


def test_per_user_protocol_keeps_a_training_interaction_for_tiny_users():
  ds = Dataset(name='tiny', users=np.array([0, 1, 1, 2, 2, 2], np.int32),
               items=np.array([0, 0, 1, 0, 1, 2], np.int32), ratings=None, timestamps=None,
               user_ids=np.array(['a', 'b', 'c'], object),
               item_ids=np.array(['x', 'y', 'z'], object))
  split = split_per_user(ds, seed=0, test_fraction=0.5, valid_fraction=0.5)
  assert set(split.train[:, 0].tolist()) == {0, 1, 2}
  assert_partition_of_dataset(split, ds)


def test_parts_keep_file_row_order():
  ds = synthetic()
  split = split_per_user(ds, seed=0)
  rows = {pair: i for i, pair in enumerate(zip(ds.users.tolist(), ds.items.tolist()))}
  for part in (split.train, split.valid, split.test):
    idx = [rows[p] for p in map(tuple, part.tolist())]
    assert idx == sorted(idx)


def test_unknown_protocol_is_quoted_and_valid_ones_listed():
  with pytest.raises(ValueError, match=r"'u1'.*\['paper', 'per_user'\]"):
    make_split(synthetic(), protocol='u1', seed=0)


def test_bad_fraction_is_quoted():
  with pytest.raises(ValueError, match=r'valid_fraction .* 1.5'):
    split_paper(synthetic(), seed=0, valid_fraction=1.5)

"""Tests for tff_rqfed.data.partition (Sec. 6.1 clients; Table 3 one user per client)."""

import numpy as np
import pytest

from tff_rqfed.data.partition import SCHEMES, build_clients, partition_users
from tff_rqfed.data.protocols import Split, split_paper


def test_blocks_on_943_users_gives_99_clients_of_9_and_one_of_52():
  groups = partition_users(943, scheme='blocks', num_clients=100)
  assert len(groups) == 100
  assert [len(g) for g in groups] == [9] * 99 + [52]
  np.testing.assert_array_equal(np.concatenate(groups), np.arange(943))
  assert all(g.dtype == np.int32 for g in groups)
  np.testing.assert_array_equal(groups[1], np.arange(9, 18))


def test_per_user_gives_one_client_per_user_ignoring_num_clients():
  groups = partition_users(943, scheme='per_user', num_clients=100)
  assert len(groups) == 943
  assert all(g.tolist() == [u] for u, g in enumerate(groups))


def test_blocks_with_num_clients_equal_to_num_users():
  assert [g.tolist() for g in partition_users(3, scheme='blocks', num_clients=3)] == [
      [0], [1], [2]]


@pytest.mark.parametrize('num_clients', [0, -1, 11])
def test_bad_num_clients_is_quoted(num_clients):
  with pytest.raises(ValueError, match=rf'num_clients .*got {num_clients}'):
    partition_users(10, scheme='blocks', num_clients=num_clients)


def test_unknown_scheme_is_quoted_and_valid_ones_listed():
  with pytest.raises(ValueError, match=r"'iid'.*\['blocks', 'per_user'\]"):
    partition_users(10, scheme='iid')
  assert SCHEMES == ('blocks', 'per_user')


def toy_split():
  train = np.array([[0, 5], [3, 1], [1, 2], [0, 7], [4, 4], [3, 3]], np.int32)
  empty = np.zeros((0, 2), np.int32)
  return Split(train=train, valid=empty, test=empty, num_users=5, num_items=8)


def test_build_clients_maps_interactions_to_local_users():
  clients = build_clients(toy_split(), scheme='blocks', num_clients=2)
  assert [c.user_ids.tolist() for c in clients] == [[0, 1], [2, 3, 4]]
  first, second = clients
  assert first.local_users.tolist() == [0, 1, 0] and first.items.tolist() == [5, 2, 7]
  assert second.local_users.tolist() == [1, 2, 1] and second.items.tolist() == [1, 4, 3]
  assert (first.num_examples, second.num_examples) == (3, 3)
  assert first.local_users.dtype == np.int32 and first.items.dtype == np.int32


def test_per_user_client_without_training_data_has_zero_examples():
  clients = build_clients(toy_split(), scheme='per_user')
  assert len(clients) == 5
  assert clients[2].num_examples == 0 and clients[2].user_ids.tolist() == [2]
  assert clients[3].items.tolist() == [1, 3] and clients[3].local_users.tolist() == [0, 0]


@pytest.fixture(scope='module')
def ml100k_split(cached_movielens):
  return split_paper(cached_movielens('ml-100k'), seed=0)


def test_ml100k_blocks_clients_cover_all_training_interactions(ml100k_split):
  clients = build_clients(ml100k_split, scheme='blocks')
  assert len(clients) == 100
  assert [len(c.user_ids) for c in clients] == [9] * 99 + [52]
  assert sum(c.num_examples for c in clients) == 72000
  rebuilt = np.concatenate([np.stack([c.user_ids[c.local_users], c.items], 1) for c in clients])
  assert sorted(map(tuple, rebuilt.tolist())) == sorted(map(tuple, ml100k_split.train.tolist()))


def test_ml100k_per_user_gives_943_clients(ml100k_split):
  clients = build_clients(ml100k_split, scheme='per_user')
  assert len(clients) == 943
  assert sum(c.num_examples for c in clients) == 72000
  assert all((c.local_users == 0).all() for c in clients)

"""Train/validation/test splitting protocols (Sec. 6.1, evaluation protocol).

Two protocols, both deterministic given ``seed`` (a seeded
``numpy.random.Generator``):

* ``'paper'``: the reference protocol of the paper's authors. For ML-100k
  (``dataset.name == 'ml-100k'``) the official ``u1`` split: the first 20,000
  rows of the interaction file (file row order) are the test set and the
  remaining 80,000 the training set. For any other dataset a random 8:2
  split of the interactions. In both cases 10% of the training interactions,
  drawn at random, become the validation set (ML-100k: exactly 72,000 train /
  8,000 valid / 20,000 test).
* ``'per_user'``: for each user a random 80/20 split of that user's
  interactions, then 10% of each user's training interactions as validation.
  Every user with >= 2 interactions keeps >= 1 training interaction.

Every part holds ``(user, item)`` dense index pairs; within a part,
interactions keep their file row order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tff_rqfed.data.interactions import Dataset

__all__ = ['PROTOCOLS', 'Split', 'make_split', 'split_paper', 'split_per_user']

PROTOCOLS = ('paper', 'per_user')

# Size of the official MovieLens-100k u1.test (the first rows of u.data).
ML100K_U1_TEST_SIZE = 20_000


@dataclasses.dataclass(frozen=True)
class Split:
  """A train/valid/test split of a dataset's interactions.

  Attributes:
    train: int32[n_train, 2] (user, item) dense indices.
    valid: int32[n_valid, 2].
    test: int32[n_test, 2].
    num_users: number of users of the dataset (index space of column 0).
    num_items: number of items of the dataset (index space of column 1).
    cold_items: int32[C] items held out of training and validation (`data.cold_items`), or None.
  """

  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  num_users: int
  num_items: int
  cold_items: np.ndarray | None = None


def _round_half_up(x: np.ndarray) -> np.ndarray:
  return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _check_fraction(name: str, value: float) -> None:
  if not 0.0 <= value < 1.0:
    raise ValueError(f'{name} must be in [0, 1), got {value!r}')


def _pairs(dataset: Dataset, rows: np.ndarray) -> np.ndarray:
  rows = np.sort(rows)
  return np.stack([dataset.users[rows], dataset.items[rows]], axis=1).astype(np.int32)


def _make(dataset: Dataset, train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> Split:
  return Split(train=_pairs(dataset, train), valid=_pairs(dataset, valid),
               test=_pairs(dataset, test), num_users=dataset.num_users,
               num_items=dataset.num_items)


def split_paper(dataset: Dataset, *, seed: int, valid_fraction: float = 0.1) -> Split:
  """The authors' reference protocol (module docstring).

  Args:
    dataset: the interactions; ML-100k is recognised by ``dataset.name``.
    seed: seed of the numpy Generator drawing the random parts.
    valid_fraction: fraction of the training rows moved to validation
      (rounded half up).
  """
  _check_fraction('valid_fraction', valid_fraction)
  rng = np.random.default_rng(seed)
  n = dataset.num_interactions
  if dataset.name == 'ml-100k':
    if n < ML100K_U1_TEST_SIZE:
      raise ValueError(
          f'ml-100k paper split needs >= {ML100K_U1_TEST_SIZE} interactions, got {n}')
    test = np.arange(ML100K_U1_TEST_SIZE)
    train = np.arange(ML100K_U1_TEST_SIZE, n)
  else:
    perm = rng.permutation(n)
    n_test = int(_round_half_up(0.2 * n))
    test, train = perm[:n_test], perm[n_test:]
  n_valid = int(_round_half_up(valid_fraction * len(train)))
  chosen = rng.permutation(len(train))
  valid, train = train[chosen[:n_valid]], train[chosen[n_valid:]]
  return _make(dataset, train, valid, test)


def split_per_user(dataset: Dataset, *, seed: int, test_fraction: float = 0.2,
                   valid_fraction: float = 0.1) -> Split:
  """Per-user random split (module docstring).

  A user with ``n`` interactions gets ``min(round(test_fraction * n), n - 1)``
  test interactions (0 when ``n == 1``) and, of the ``m`` remaining,
  ``min(round(valid_fraction * m), m - 1)`` validation interactions; rounding
  is half up.
  """
  _check_fraction('test_fraction', test_fraction)
  _check_fraction('valid_fraction', valid_fraction)
  rng = np.random.default_rng(seed)
  users = dataset.users.astype(np.int64)
  n = len(users)
  # Random rank of each interaction within its user's interactions.
  order = np.lexsort((rng.random(n), users))
  counts = np.bincount(users, minlength=dataset.num_users)
  group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.empty(n, dtype=np.int64)
  rank[order] = np.arange(n) - group_start[users[order]]

  n_test = np.minimum(_round_half_up(test_fraction * counts), np.maximum(counts - 1, 0))
  n_train_valid = counts - n_test
  n_valid = np.minimum(_round_half_up(valid_fraction * n_train_valid),
                       np.maximum(n_train_valid - 1, 0))
  is_test = rank < n_test[users]
  is_valid = ~is_test & (rank < (n_test + n_valid)[users])
  is_train = ~is_test & ~is_valid
  return _make(dataset, np.flatnonzero(is_train), np.flatnonzero(is_valid),
               np.flatnonzero(is_test))


def make_split(dataset: Dataset, *, protocol: str, seed: int) -> Split:
  """Splits ``dataset`` with the named protocol (one of :data:`PROTOCOLS`)."""
  if protocol == 'paper':
    return split_paper(dataset, seed=seed)
  if protocol == 'per_user':
    return split_per_user(dataset, seed=seed)
  raise ValueError(f'unknown split protocol {protocol!r}; valid: {list(PROTOCOLS)}')

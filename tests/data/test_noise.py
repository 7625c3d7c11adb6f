"""Noise injection (Table 7): each part of the split gets its share of misclicks on unseen items."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.data import noise
from tff_rqfed.data.protocols import Split


def _split():
  rng = np.random.default_rng(0)
  pairs = np.array(sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 20, 400),
                                                            rng.integers(0, 50, 400))}), np.int32)
  rng.shuffle(pairs)
  n = len(pairs)
  return Split(train=pairs[:int(0.7 * n)], valid=pairs[int(0.7 * n):int(0.8 * n)],
               test=pairs[int(0.8 * n):], num_users=20, num_items=50)


@pytest.mark.parametrize('ratio', [0.05, 0.1, 0.15])
def test_each_part_gets_ratio_times_its_size_of_new_unseen_pairs(ratio):
  split = _split()
  noisy = noise.inject_noise(split, ratio=ratio, seed=0)
  every = set()
  for name in ('train', 'valid', 'test'):
    part, out = getattr(split, name), getattr(noisy, name)
    added = out[len(part):]
    np.testing.assert_array_equal(out[:len(part)], part)  # the original rows, unchanged, first
    assert len(added) == int(np.floor(ratio * len(part) + 0.5))
    assert set(map(tuple, added[:, 0:1].tolist())) <= set(map(tuple, part[:, 0:1].tolist()))
    every |= set(map(tuple, out.tolist()))
  total = sum(len(getattr(noisy, name)) for name in ('train', 'valid', 'test'))
  assert len(every) == total  # noise never repeats an interaction nor another noise row
  assert noisy.num_users == split.num_users and noisy.num_items == split.num_items


def test_same_seed_same_noise_other_seed_other_noise():
  split = _split()
  a, b = (noise.inject_noise(split, ratio=0.1, seed=s) for s in (1, 1))
  c = noise.inject_noise(split, ratio=0.1, seed=2)
  np.testing.assert_array_equal(a.train, b.train)
  assert not np.array_equal(a.train, c.train)


def test_zero_ratio_is_the_split_itself_and_bad_ratios_are_refused():
  split = _split()
  assert noise.inject_noise(split, ratio=0.0, seed=0) is split
  with pytest.raises(ValueError, match=r'noise ratio must be in \[0, 1\], got 1.5'):
    noise.inject_noise(split, ratio=1.5, seed=0)


def test_a_user_who_has_seen_every_item_cannot_get_noise():
  full = np.array([(0, i) for i in range(4)], np.int32)
  split = Split(train=full, valid=full[:0], test=full[:0], num_users=1, num_items=4)
  with pytest.raises(ValueError, match='user 0 has interacted with all 4 items'):
    noise.inject_noise(split, ratio=0.5, seed=0)

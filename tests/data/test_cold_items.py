"""Cold-start items: held out of training and validation, every interaction of theirs tested."""

import numpy as np
import pytest

from tff_rqfed.data import cold_items
from tff_rqfed.data.protocols import Split


def _split():
  rng = np.random.default_rng(0)
  pairs = np.array([(u, i) for u in range(20) for i in rng.choice(50, size=10, replace=False)], np.int32)
  return Split(train=pairs[:140], valid=pairs[140:160], test=pairs[160:], num_users=20, num_items=50)


def test_cold_items_leave_training_and_validation_with_every_interaction_moved_to_test():
  split = _split()
  held = cold_items.hold_out_items(split, ratio=0.2, seed=3)
  cold = set(held.cold_items.tolist())
  trained = set(np.concatenate([split.train, split.valid])[:, 1].tolist())
  assert len(cold) == round(0.2 * len(trained)) and cold <= trained
  assert not cold & set(held.train[:, 1].tolist()) and not cold & set(held.valid[:, 1].tolist())
  every = lambda s: sorted(map(tuple, np.concatenate([s.train, s.valid, s.test]).tolist()))
  assert every(held) == every(split)  # nothing lost, nothing added
  moved = [tuple(p) for p in np.concatenate([split.train, split.valid]).tolist() if p[1] in cold]
  assert set(moved) <= set(map(tuple, held.test.tolist()))


def test_hold_out_is_deterministic_in_the_seed():
  split = _split()
  a, b = (cold_items.hold_out_items(split, ratio=0.1, seed=1) for _ in range(2))
  c = cold_items.hold_out_items(split, ratio=0.1, seed=2)
  assert a.cold_items.tolist() == b.cold_items.tolist() != c.cold_items.tolist()


def test_ratio_zero_returns_the_split_unchanged():
  split = _split()
  assert cold_items.hold_out_items(split, ratio=0.0, seed=0) is split


@pytest.mark.parametrize('ratio, message', [(1.0, r'\[0, 1\), got 1.0'), (-0.1, r'got -0.1'),
                                            (0.001, 'holds out no item')])
def test_bad_ratio_is_refused_quoting_it(ratio, message):
  with pytest.raises(ValueError, match=message):
    cold_items.hold_out_items(_split(), ratio=ratio, seed=0)

"""Noisy interactions: simulated misclicks injected into the data (Sec. 6.4.3, Table 7).

The paper injects noisy interactions "into the raw data" at a noise ratio and trains on them. Here a
noise row is a (user, item) pair with the user of a random existing interaction and an item drawn
uniformly from the items that user has no interaction with (nor an earlier noise row). Each part of the
split (train, validation, test) gets `round(ratio * |part|)` noise rows anchored on its own rows, which
is the raw-data injection followed by the same split, with every noise row kept in its anchor's part:
the official ML-100k u1 split stays the same interactions plus noise, and the test set is as noisy as
the paper's (its FedMF recall falls from 0.164 to 0.088 at ratio 0.05, which noise in training alone
would not do). Deterministic in `seed`; noise rows follow the part's rows in the returned arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tff_rqfed.data.protocols import Split

NOISE_STREAM = 7  # the generator of the injection is default_rng([seed, NOISE_STREAM])


def _noise_rows(part: np.ndarray, count: int, *, seen: set, per_user: np.ndarray, num_items: int,
                rng) -> np.ndarray:
  """`count` noise rows anchored on random rows of `part`; updates `seen` and the `per_user` counts."""
  rows = np.empty((count, 2), np.int32)
  for r in range(count):
    user = int(part[rng.integers(len(part)), 0])
    if per_user[user] >= num_items:
      raise ValueError(f'user {user} has interacted with all {num_items} items: no noise item is left')
    item = int(rng.integers(num_items))
    while (user, item) in seen:  # rejection sampling: users have seen few of the items
      item = int(rng.integers(num_items))
    seen.add((user, item))
    per_user[user] += 1
    rows[r] = (user, item)
  return rows


def inject_noise(split: Split, *, ratio: float, seed: int) -> Split:
  """`split` with `round(ratio * |part|)` noise interactions added to each part (module docstring)."""
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f'noise ratio must be in [0, 1], got {ratio!r}')
  if ratio == 0.0:
    return split
  rng = np.random.default_rng([seed, NOISE_STREAM])
  every = np.concatenate([split.train, split.valid, split.test])
  seen = {(int(u), int(i)) for u, i in every}
  per_user = np.bincount(every[:, 0], minlength=split.num_users)
  parts = {}
  for name in ('train', 'valid', 'test'):
    part = getattr(split, name)
    count = int(np.floor(ratio * len(part) + 0.5)) if len(part) else 0
    noise = _noise_rows(part, count, seen=seen, per_user=per_user, num_items=split.num_items, rng=rng)
    parts[name] = np.concatenate([part, noise]).astype(part.dtype)
  return dataclasses.replace(split, **parts)

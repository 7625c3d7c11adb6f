"""Cold-start items: a share of the items held out of all training data (issue 9, beyond the paper).

RQFedRec builds every item's embedding from its code ids (Eq. 6/9), and an item's semantic ids come
from its text alone (Sec. 4.1), so an item that no client ever trained on still gets the codebook
rows its codes share with trained items. FedMF indexes by item id: an item nobody trained keeps its
initial row. `hold_out_items` makes such items: it draws `round(ratio * |items with a training or
validation interaction|)` of them and moves every one of their training and validation interactions
into the test set, so no client sees them; `Split.cold_items` lists them, the training loop passes
them to every client so they are never drawn as negatives either (`mf.round_examples`), and the
summary scores their test interactions as the item group 'cold' (`evaluation.item_groups`).
Deterministic in `seed` (its own random stream).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tff_rqfed.data.protocols import Split

COLD_STREAM = 8  # the generator of the draw is default_rng([seed, COLD_STREAM]) (noise uses 7)


def hold_out_items(split: Split, *, ratio: float, seed: int) -> Split:
  """`split` with `ratio` of its trained items moved, with all their interactions, into the test set."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f'cold item ratio must be in [0, 1), got {ratio!r}')
  if ratio == 0.0:
    return split
  trained = np.unique(np.concatenate([split.train, split.valid])[:, 1])
  count = int(np.floor(ratio * len(trained) + 0.5))
  if count == 0:
    raise ValueError(f'cold item ratio {ratio!r} of {len(trained)} trained items holds out no item')
  rng = np.random.default_rng([seed, COLD_STREAM])
  cold = np.sort(rng.choice(trained, size=count, replace=False)).astype(np.int32)
  is_cold = np.zeros(split.num_items, bool)
  is_cold[cold] = True
  parts = {}
  moved = []
  for name in ('train', 'valid'):
    part = getattr(split, name)
    parts[name] = part[~is_cold[part[:, 1]]]
    moved.append(part[is_cold[part[:, 1]]])
  test = np.concatenate([split.test, *moved]).astype(split.test.dtype)
  return dataclasses.replace(split, **parts, test=test, cold_items=cold)

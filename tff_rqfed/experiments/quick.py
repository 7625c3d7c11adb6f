"""`launchers.experiments --quick`: every table on tiny synthetic data in seconds per cell.

The data: 30 users x 40 items in two planted communities (users 1-15 like items 101-120, users 16-30
items 121-140, 14 interactions each) and an item file with a text per item, so RQFedRec's semantic
channel runs too. Cells train d = 8 for 2 rounds over 3 clients (Table 3: one client per user) with
small codebooks. The quick mode exercises the runner end to end; its numbers mean nothing.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tff_rqfed.results_io import write_atomic

NUM_USERS, NUM_ITEMS = 30, 40

# Per algorithm, what shrinks the method to the tiny data (RQFedRec: L = 2, M = 4, tau = 1).
EXTRA_FLAGS = {'rqfedrec': {'levels': 2, 'codes_per_level': 4, 'refresh_every': 1, 'warmup_rounds': 1,
                            'kmeans_dim': 8},
               'fedncf': {'ncf_hidden_units': '8'},
               'gpfedrec': {'gpfedrec_hidden_units': '8,4'},
               'fedcia': {'fedcia_align_steps': 2},
               'fedalphafuse': {'alphafuse_null_dim': 4}}


def write_interactions(path: pathlib.Path) -> pathlib.Path:
  """The two-community interaction file (module docstring), with ratings and timestamps."""
  rng = np.random.default_rng(0)
  lines = ['user_id\titem_id\trating\ttimestamp']
  for u in range(NUM_USERS):
    group = 101 + np.arange(20) + (0 if u < NUM_USERS // 2 else 20)
    for j, item in enumerate(rng.choice(group, size=14, replace=False)):
      lines.append(f'{u + 1}\t{item}\t{1 + (u + j) % 5}\t{1000 + 10 * u + j}')
  # Atomic: runners sharing a folder rewrite these files while other runners' cells read them.
  write_atomic(path, '\n'.join(lines) + '\n')
  return path


def write_dataset(folder: pathlib.Path) -> dict[str, object]:
  """Writes the synthetic interaction and item files and returns the cells' dataset flags."""
  folder.mkdir(parents=True, exist_ok=True)
  interactions = write_interactions(folder / 'interactions.tsv')
  genres = ['a quiet drama about family', 'a loud action film with chases']
  items = folder / 'items.tsv'
  write_atomic(items, 'item_id\ttext\n' + ''.join(
      f'{101 + i}\t{genres[i // 20]}, number {i}\n' for i in range(NUM_ITEMS)))
  return {'dataset': 'file', 'interactions_file': str(interactions), 'item_file': str(items),
          'data_dir': str(folder), 'clients': 3, 'embedding_dim': 8, 'rounds': 2, 'min_rounds': 0}

r"""Tabulates the summary.json files under a results folder (mean and spread over seeds).

  python -m launchers.report results/main [--output results/main/table.md]

Runs are grouped by their folder name with a trailing `-s<seed>` removed, so `fedmf-s0`, `fedmf-s1`
and `fedmf-s2` make one row with the mean and standard deviation over the three seeds.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

from absl import app
from absl import flags
import pandas as pd

from tff_rqfed.experiments import tables
from tff_rqfed.results_io import write_atomic

_OUTPUT = flags.DEFINE_string('output', None, 'Also write the table (markdown) here.')

METRICS = ('recall@10', 'mrr@10', 'ndcg@10')


def collect(root: pathlib.Path) -> pd.DataFrame:
  rows = []
  for path in sorted(root.rglob('summary.json')):
    summary = json.loads(path.read_text())
    run = path.parent.relative_to(root).as_posix()
    row = {'method': re.sub(r'-s\d+$', '', run), 'run': run,
           'valid/ndcg@10': summary.get('valid', {}).get('ndcg@10'),
           'best_round': summary.get('best_round'),
           'seconds_per_round': summary.get('seconds_per_round'),
           'upload': summary.get('communication', {}).get('upload'),
           'download': summary.get('communication', {}).get('download')}
    for block in ('test', 'test_paper'):
      for metric in METRICS:
        row[f'{block}/{metric}'] = summary[block][metric]
    rows.append(row)
  if not rows:
    raise SystemExit(f'No summary.json under {root}')
  return pd.DataFrame(rows)


def table(runs: pd.DataFrame) -> str:
  columns = ([c for c in runs.columns if c.startswith('test')]
             + ['valid/ndcg@10', 'best_round', 'seconds_per_round'])
  lines = ['| method | seeds | ' + ' | '.join(columns) + ' | upload | download |',
           '|' + '---|' * (len(columns) + 4)]
  for method, group in runs.groupby('method', sort=False):
    cells = [tables.mean_std(group[column], 4 if '@' in column else 1) for column in columns]
    lines.append(f'| {method} | {len(group)} | ' + ' | '.join(cells)
                 + f' | {group["upload"].iloc[0]} | {group["download"].iloc[0]} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m launchers.report RESULTS_DIR')
  text = table(collect(pathlib.Path(argv[1])))
  print(text)
  if _OUTPUT.value:
    write_atomic(pathlib.Path(_OUTPUT.value), text)


if __name__ == '__main__':
  app.run(main)

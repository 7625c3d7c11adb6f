"""The runner's figures, drawn with matplotlib from the cells' results.

- `bars`: one group of bars per row, one bar per metric column, mean over seeds with the standard
  deviation as error bars. Fig. 3 (ablations): Recall@10 and NDCG@10 (correct metrics) and the
  paper-code NDCG@10 (`BAR_METRICS`); the long-tail analysis: Recall@10 on the test items of the head,
  torso and tail, or on the cold and warm items (`group_bar_metrics`).
- `budget_curves`: test NDCG@10 (mean ± std over seeds) against the values a client uploads per round,
  one line per option varied (FedMF's d, RQFedRec's M, RQFedRec's d; the budget analysis: does
  RQFedRec give more NDCG per value sent?).
- `similarity_heatmaps` (Fig. 4): one G x G heatmap per row, the mean |change of item-item cosine
  similarity| between consecutive rounds per pair of item groups, on one colour scale.
- `validation_curves`: validation NDCG@10 per round for every row of a table (mean over seeds), the
  curve each method's early stopping read.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import pandas as pd

BAR_METRICS = (('test/recall@10', 'Recall@10'), ('test/ndcg@10', 'NDCG@10'),
               ('test_paper/ndcg@10', 'NDCG@10 (paper code)'))


def group_bar_metrics(groups) -> tuple[tuple[str, str], ...]:
  """The bars of an item-group analysis: Recall@10 on each group's test items."""
  return tuple((f'group/{group}/recall@10', f'Recall@10, {group} items') for group in groups)


def _save(fig, path: pathlib.Path) -> None:
  """Writes the PNG atomically (a temporary file in the same folder, then a rename)."""
  tmp = path.with_name(f'.{path.name}.tmp.png')
  fig.savefig(tmp, dpi=120, bbox_inches='tight')
  plt.close(fig)
  tmp.replace(path)


def bars(records: pd.DataFrame, rows: list[str], path: pathlib.Path, *, title: str,
         metrics=BAR_METRICS) -> None:
  """Grouped bars of `rows` (labels in order) over seeds; error bars: std over seeds (0 for one).

  `metrics`: (cells.csv column, legend label) pairs, one bar each; a column missing from `records`
  (cells run before it existed) is left out.
  """
  present = [row for row in rows if (records['row'] == row).any()]
  metrics = [(column, label) for column, label in metrics if column in records]
  width = 0.8 / max(len(metrics), 1)
  fig, ax = plt.subplots(figsize=(1.6 * len(present) + 2, 3.6))
  x = np.arange(len(present))
  for j, (column, label) in enumerate(metrics):
    groups = [records.loc[records['row'] == row, column].astype(float) for row in present]
    means = [g.mean() for g in groups]
    stds = [g.std(ddof=1) if len(g) > 1 else 0.0 for g in groups]
    ax.bar(x + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label)
  seeds = int(records.groupby('row').size().max())
  ax.set_xticks(x, present)
  ax.set_ylabel('test metric')
  ax.set_title(f'{title} (mean ± std over {seeds} seed{"s" if seeds > 1 else ""})')
  ax.legend(fontsize=8)
  _save(fig, path)


def budget_curves(records: pd.DataFrame, path: pathlib.Path, *, title: str,
                  curves: dict[str, tuple[str, ...]], metric: str = 'test/ndcg@10') -> None:
  """`metric` against `upload` (log scale), one line per entry of `curves` (line name -> the row
  labels on it; a row may sit on two lines), error bars over seeds; lines with no finished row are
  left out."""
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, labels in curves.items():
    group = records[records['row'].isin(labels)]
    if group.empty:
      continue
    by_budget = group.groupby('upload')[metric].agg(['mean', 'std', 'count']).sort_index()
    stds = by_budget['std'].where(by_budget['count'] > 1, 0.0)
    ax.errorbar(by_budget.index.to_numpy(), by_budget['mean'].to_numpy(), yerr=stds.to_numpy(),
                marker='o', capsize=3, label=name)
  ax.set_xscale('log')
  ax.set_xlabel('values uploaded per client per round')
  ax.set_ylabel(metric)
  ax.set_title(title)
  ax.legend(fontsize=8)
  _save(fig, path)


def similarity_heatmaps(matrices: dict[str, np.ndarray], path: pathlib.Path, *, title: str) -> None:
  """Side-by-side heatmaps of `matrices` (row label -> float[G, G]) with a shared colour scale."""
  fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices) + 1, 4), squeeze=False)
  vmax = max(float(np.max(m)) for m in matrices.values())
  for ax, (label, matrix) in zip(axes[0], matrices.items()):
    image = ax.imshow(matrix, cmap='Blues', vmin=0.0, vmax=vmax)
    ax.set_title(f'{label} (mean {np.mean(matrix):.4f})')
    ax.set_xticks(range(0, len(matrix), 5))
    ax.set_yticks(range(0, len(matrix), 5))
    ax.set_xlabel('item group')
    ax.set_ylabel('item group')
  fig.colorbar(image, ax=axes[0].tolist(), label='mean |change of cosine similarity|')
  fig.suptitle(title)
  _save(fig, path)


def validation_curves(curves: dict[str, list[pd.DataFrame]], path: pathlib.Path, *, title: str) -> None:
  """Validation NDCG@10 against the round for every row; `curves` maps a row to its seeds' rounds.csv."""
  fig, ax = plt.subplots(figsize=(7, 4))
  for row, frames in curves.items():
    frames = [f[['round', 'valid_ndcg@10']].dropna() for f in frames if 'valid_ndcg@10' in f]
    if not frames:
      continue
    mean = pd.concat(frames).groupby('round')['valid_ndcg@10'].mean()
    ax.plot(mean.index, mean.to_numpy(), label=row)
  ax.set_xlabel('round')
  ax.set_ylabel('validation NDCG@10')
  ax.set_title(title)
  ax.legend(fontsize=8)
  _save(fig, path)

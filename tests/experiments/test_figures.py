"""The runner's figures draw what their records hold: one budget line per curve, means over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tff_rqfed.experiments import figures


def _drawn_lines(monkeypatch, draw):
  """Runs `draw` and returns {legend label: (x, y)} of the figure it saved."""
  saved = {}

  def keep(fig, path):
    saved['axes'] = fig.axes[0]
    path.write_bytes(b'png')

  monkeypatch.setattr(figures, '_save', keep)
  draw()
  handles, labels = saved['axes'].get_legend_handles_labels()  # errorbar containers
  return {label: (list(handle.lines[0].get_xdata()), list(handle.lines[0].get_ydata()))
          for handle, label in zip(handles, labels)}


def test_budget_curves_draw_one_line_per_curve_and_a_shared_row_on_both(tmp_path, monkeypatch):
  records = pd.DataFrame([
      {'row': 'FedMF, d 32', 'upload': 100, 'test/ndcg@10': 0.40},
      {'row': 'FedMF, d 32', 'upload': 100, 'test/ndcg@10': 0.44},  # a second seed
      {'row': 'FedMF, d 64', 'upload': 200, 'test/ndcg@10': 0.45},
      {'row': 'RQFedRec, M 16', 'upload': 90, 'test/ndcg@10': 0.30},
      {'row': 'RQFedRec, M 256', 'upload': 900, 'test/ndcg@10': 0.48},
      {'row': 'RQFedRec, d 64', 'upload': 110, 'test/ndcg@10': 0.41},
  ])
  curves = {'FedMF, d': ('FedMF, d 32', 'FedMF, d 64'), 'RQFedRec, M': ('RQFedRec, M 16', 'RQFedRec, M 256'),
            'RQFedRec, d': ('RQFedRec, d 64', 'RQFedRec, M 256'), 'nothing finished': ('RQFedRec, d 128',)}
  lines = _drawn_lines(monkeypatch, lambda: figures.budget_curves(
      records, tmp_path / 'budget.png', title='t', curves=curves))
  assert set(lines) == {'FedMF, d', 'RQFedRec, M', 'RQFedRec, d'}
  assert lines['FedMF, d'][0] == [100, 200] and np.allclose(lines['FedMF, d'][1], [0.42, 0.45])
  assert lines['RQFedRec, d'] == ([110, 900], [0.41, 0.48])
  assert lines['RQFedRec, M'][0] == [90, 900]
  assert (tmp_path / 'budget.png').exists()

"""Tests of `launchers.report`: runs grouped over seeds, mean and sample std, missing values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launchers import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _summary(recall, *, ndcg=0.3, valid_ndcg=0.2, best_round=10, seconds=2.0,
             upload=861184, download=861184):
  """A summary.json in the layout `tff_rqfed.simulation` writes (paper metrics offset by 0.1)."""
  test = {'recall@10': recall, 'mrr@10': 0.5, 'ndcg@10': ndcg}
  summary = {
      'algorithm': 'x', 'test': test,
      'test_paper': {key: value + 0.1 for key, value in test.items()},
      'best_round': best_round, 'seconds_per_round': seconds,
      'communication': {'upload': upload, 'download': download, 'upload_scalars': 0,
                        'download_scalars': 0},
  }
  if valid_ndcg is not None:
    summary['valid'] = {'recall@10': 0.1, 'mrr@10': 0.2, 'ndcg@10': valid_ndcg}
  return summary


def _write(root, run, summary):
  (root / run).mkdir(parents=True)
  (root / run / 'summary.json').write_text(json.dumps(summary))


def _rows(text):
  """The markdown table as {method: {column: cell}}."""
  header, _, *lines = text.strip().splitlines()
  columns = [cell.strip() for cell in header.strip('|').split('|')]
  rows = {}
  for line in lines:
    cells = [cell.strip() for cell in line.strip('|').split('|')]
    assert len(cells) == len(columns), line
    rows[cells[0]] = dict(zip(columns, cells))
  return rows


def test_collect_groups_seed_folders_into_one_method(tmp_path):
  for seed, recall in enumerate([0.1, 0.2, 0.6]):
    _write(tmp_path, f'fedmf-s{seed}', _summary(recall))
  _write(tmp_path, 'fedmf-s1x', _summary(0.4))  # not a seed suffix
  _write(tmp_path, 'rq-seed', _summary(0.5))
  runs = report.collect(tmp_path)
  assert sorted(runs['run']) == ['fedmf-s0', 'fedmf-s1', 'fedmf-s1x', 'fedmf-s2', 'rq-seed']
  assert runs.set_index('run')['method'].to_dict() == {
      'fedmf-s0': 'fedmf', 'fedmf-s1': 'fedmf', 'fedmf-s2': 'fedmf', 'fedmf-s1x': 'fedmf-s1x',
      'rq-seed': 'rq-seed'}
  rows = _rows(report.table(runs))
  assert sorted(rows) == ['fedmf', 'fedmf-s1x', 'rq-seed']
  assert [rows[m]['seeds'] for m in ('fedmf', 'fedmf-s1x', 'rq-seed')] == ['3', '1', '1']


def test_table_shows_mean_and_sample_standard_deviation_over_seeds(tmp_path):
  # recall 0.1, 0.2, 0.6: mean 0.3, sample std sqrt(0.07) = 0.2646 (population std: 0.2160).
  # best_round 10, 20, 60: 30.0 +- 26.5 (population: 21.6).
  for seed, recall in enumerate([0.1, 0.2, 0.6]):
    _write(tmp_path, f'fedmf-s{seed}',
           _summary(recall, best_round=int(100 * recall), seconds=1.0 + seed))
  row = _rows(report.table(report.collect(tmp_path)))['fedmf']
  assert row['test/recall@10'] == '0.3000 ± 0.2646'
  assert row['test_paper/recall@10'] == '0.4000 ± 0.2646'
  assert row['test/mrr@10'] == '0.5000 ± 0.0000'
  assert row['best_round'] == '30.0 ± 26.5'
  assert row['seconds_per_round'] == '2.0 ± 1.0'


def test_single_run_shows_the_value_without_spread(tmp_path):
  _write(tmp_path, 'rqfedrec', _summary(0.15556, ndcg=0.47481, best_round=25, seconds=3.81))
  row = _rows(report.table(report.collect(tmp_path)))['rqfedrec']
  assert row['seeds'] == '1'
  assert row['test/recall@10'] == '0.1556'
  assert row['test/ndcg@10'] == '0.4748'
  assert row['test_paper/ndcg@10'] == '0.5748'
  assert row['best_round'] == '25.0' and row['seconds_per_round'] == '3.8'
  assert '±' not in report.table(report.collect(tmp_path))


def test_missing_metrics_show_a_dash(tmp_path):
  # MostPop's summary: no validation metrics and no seconds per round.
  _write(tmp_path, 'mostpop', _summary(0.0975, valid_ndcg=None, seconds=None, best_round=0,
                                       upload=0, download=0))
  row = _rows(report.table(report.collect(tmp_path)))['mostpop']
  assert row['valid/ndcg@10'] == '-'
  assert row['seconds_per_round'] == '-'
  assert row['test/recall@10'] == '0.0975' and row['best_round'] == '0.0'


def test_communication_columns_come_from_the_summary(tmp_path):
  _write(tmp_path, 'rqfedrec-s0', _summary(0.15, upload=786432, download=796524))
  _write(tmp_path, 'rqfedrec-s1', _summary(0.16, upload=786432, download=796524))
  _write(tmp_path, 'fedmf', _summary(0.16, upload=861184, download=861185))
  rows = _rows(report.table(report.collect(tmp_path)))
  assert (rows['rqfedrec']['upload'], rows['rqfedrec']['download']) == ('786432', '796524')
  assert (rows['fedmf']['upload'], rows['fedmf']['download']) == ('861184', '861185')


def test_empty_folder_exits_with_a_message_naming_it(tmp_path):
  empty = tmp_path / 'no-runs-here'
  empty.mkdir()
  with pytest.raises(SystemExit, match='no-runs-here'):
    report.collect(empty)
  proc = subprocess.run([sys.executable, '-m', 'launchers.report', str(empty)], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert str(empty) in proc.stderr


def test_command_line_prints_the_table_and_writes_it_with_output(tmp_path):
  results = tmp_path / 'results'
  for seed, recall in enumerate([0.1, 0.2, 0.6]):
    _write(results, f'fedmf-s{seed}', _summary(recall))
  output = tmp_path / 'table.md'
  proc = subprocess.run([sys.executable, '-m', 'launchers.report', str(results),
                         f'--output={output}'], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert output.read_text() == report.table(report.collect(results))
  assert output.read_text() in proc.stdout
  assert _rows(output.read_text())['fedmf']['test/recall@10'] == '0.3000 ± 0.2646'

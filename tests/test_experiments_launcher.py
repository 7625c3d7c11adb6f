"""End-to-end runs of `python -m launchers.experiments --quick`: cells run once, tables are written."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
  command = [sys.executable, '-m', 'launchers.experiments', '--quick', '--progress=false', *args]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """Quick: every table, figure and analysis (a row or two each) and a 2-cell grid, in one folder.

  Two runners at a time, as a user may start them (the sweep CSVs are merged under a lock): each lane
  runs in order, and the first holds every target that reuses Table 2's FedMF cell.
  """
  root = tmp_path_factory.mktemp('experiments')
  out = f'--output_dir={root}'
  lanes = [
      {'table2': ('--table=2', '--methods=mostpop,fedmf'),
       'figure3': ('--figure=3', '--methods=fedmf,rqfedrec-wosc'),
       'table7': ('--table=7', '--methods=fedmf-noise0.05'),
       'longtail': ('--analysis=longtail', '--methods=mostpop,fedmf'),
       'privacy': ('--analysis=privacy', '--methods=fedmf-attack-delta0.02'),
       'budget': ('--analysis=budget', '--methods=fedmf-d32'),
       'table5': ('--table=5', '--methods=fedalphafuse,fedrlm_gen')},
      {'table3': ('--table=3', '--methods=pfedrec'),
       'table6': ('--table=6', '--methods=rqfedrec-hash'),
       'table4': ('--table=4',),
       'sparse': ('--analysis=sparse', '--methods=rqfedrec-frac0.5'),
       'figure4': ('--figure=4', '--methods=rqfedrec-similarity'),
       'coldstart': ('--analysis=coldstart', '--methods=rqfedrec-cold0.1'),
       'grid': ('--grid', '--methods=fedmf', '--learning_rates=0.05,0.01', '--weight_decays=0'),
       'budget_grid': ('--grid', '--analysis=budget', '--methods=fedmf-d32', '--learning_rates=0.05',
                       '--weight_decays=0')},
  ]

  def run_lane(lane):
    return {name: _run(*args, out) for name, args in lane.items()}

  with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
    runs = {name: proc for done in pool.map(run_lane, lanes) for name, proc in done.items()}
  return root, runs


def _ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_table_run_writes_cells_csv_and_the_table_beside_the_papers(sweep):
  root, runs = sweep
  _ok(runs['table2'])
  cells = pd.read_csv(root / 'cells.csv')
  assert {'fedmf-s0', 'mostpop-s0', 'per_user/pfedrec-s0', 'rqfedrec-hash-s0'} <= set(cells['cell'])
  fedmf = cells.set_index('cell').loc['fedmf-s0']
  summary = json.loads((root / 'fedmf-s0' / 'summary.json').read_text())
  assert fedmf['test/ndcg@10'] == pytest.approx(summary['test']['ndcg@10'])
  assert fedmf['test_paper/ndcg@10'] == pytest.approx(summary['test_paper']['ndcg@10'])
  assert fedmf['upload'] == 40 * 8 and fedmf['rounds_run'] == 2 and fedmf['wall_seconds'] > 0
  table = (root / 'table2.md').read_text()
  assert '| FedMF | 1 |' in table and '| MostPop | 1 |' in table
  assert f"{summary['test']['recall@10']:.4f}" in table


def test_cells_csv_records_the_cpu_commit_and_text_embeddings_of_each_cell(sweep):
  import numpy as np
  from tff_rqfed import environment

  root, runs = sweep
  for name in ('table2', 'table5', 'figure3'):
    _ok(runs[name])
  cells = pd.read_csv(root / 'cells.csv').set_index('cell')
  assert (cells['cpu'] == environment.cpu()['model']).all()
  assert (cells['commit'] == environment.git_commit()).all()
  # FedAlphaFuse and FedRLM read the item text embeddings, FedMF and RQFedRec w/o SC do not.
  [cache] = root.rglob('embeddings/*.npy')
  text_digest = environment.array_digest(np.load(cache))
  assert cells.loc['fedalphafuse-s0', 'text_embeddings_sha256'] == text_digest
  assert cells.loc['fedrlm_gen-s0', 'text_embeddings_sha256'] == text_digest
  assert cells.loc[['fedmf-s0', 'rqfedrec-wosc-s0'], 'text_embeddings_sha256'].isna().all()


def test_each_table_and_the_grid_run_their_own_cells(sweep):
  root, runs = sweep
  for name in ('table3', 'table5', 'table6', 'grid'):
    _ok(runs[name])
  assert json.loads((root / 'fedalphafuse-s0/flags.json').read_text())['alphafuse_null_dim'] == 4
  table5 = (root / 'table5.md').read_text()
  assert '| FedAlphaFuse | 1 |' in table5 and '| FedRLM_gen | 1 |' in table5
  assert json.loads((root / 'per_user/pfedrec-s0/flags.json').read_text())['partition'] == 'per_user'
  assert json.loads((root / 'rqfedrec-hash-s0/flags.json').read_text())['code_ids'] == 'hash'
  assert '| PFedRec | 1 |' in (root / 'table3.md').read_text()
  assert '| hash-based codebook | 1 |' in (root / 'table6.md').read_text()
  chosen = json.loads((root / 'chosen.json').read_text())['fedmf']
  grid = pd.read_csv(root / 'grid.csv')
  assert len(grid) == 2
  assert chosen['valid/ndcg@10'] == pytest.approx(grid['valid/ndcg@10'].max())
  assert '**' in (root / 'choosing.md').read_text()


def test_table4_counts_every_method_for_the_five_datasets_without_data(sweep):
  root, runs = sweep
  _ok(runs['table4'])
  table4 = pd.read_csv(root / 'table4.csv')
  assert sorted(set(table4['dataset'])) == ['book', 'ml-100k', 'ml-1m', 'steam', 'toys']
  assert len(table4) == 5 * 7
  fedmf = table4[table4['method'] == 'FedMF']
  assert (fedmf['upload'] == 40 * 8).all()  # --quick: 40 items, d = 8
  assert '| steam | FedCIA | 40 | 1,600 |' in (root / 'table4.md').read_text()


def test_figure3_draws_its_bars_and_every_target_its_validation_curves(sweep):
  root, runs = sweep
  _ok(runs['figure3'])
  for name in ('figure3.png', 'figure3-validation.png', 'table2-validation.png'):
    assert (root / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', name
  text = (root / 'figure3.md').read_text()
  assert '| w/o C (FedMF) | 1 |' in text and '| w/o SC | 1 |' in text
  flags_wosc = json.loads((root / 'rqfedrec-wosc-s0/flags.json').read_text())
  assert flags_wosc['channels'] == 'collaborative'
  assert not (root / 'fedmf-s0' / 'runner.json').stat().st_mtime_ns > (
      root / 'rqfedrec-wosc-s0' / 'runner.json').stat().st_mtime_ns  # FedMF's cell was reused


def test_table7_injects_the_noise_ratio_it_names(sweep):
  root, runs = sweep
  _ok(runs['table7'])
  flags_noise = json.loads((root / 'fedmf-noise0.05-s0/flags.json').read_text())
  assert flags_noise['noise_ratio'] == 0.05
  clean = json.loads((root / 'fedmf-s0/summary.json').read_text())['test']
  noisy = json.loads((root / 'fedmf-noise0.05-s0/summary.json').read_text())['test']
  assert noisy != clean
  assert '| FedMF, noise 0.05 | 1 |' in (root / 'table7.md').read_text()


def test_grid_over_a_targets_rows_writes_its_own_choosing_files_beside_the_algorithm_grid(sweep):
  root, runs = sweep
  _ok(runs['budget_grid'])
  flags = json.loads((root / 'grid/budget/fedmf-d32-lr0.05-wd0-s0/flags.json').read_text())
  assert (flags['learning_rate'], flags['weight_decay']) == (0.05, 0.0)
  assert set(json.loads((root / 'chosen-budget.json').read_text())) == {'fedmf-d32'}
  assert len(pd.read_csv(root / 'grid-budget.csv')) == 1
  assert '| fedmf-d32 | **' in (root / 'choosing-budget.md').read_text()
  assert 'fedmf-d32' not in json.loads((root / 'chosen.json').read_text())  # the algorithm grid's own


def test_grid_of_another_method_joins_the_choosing_table_unchosen_until_complete_and_report_only_runs_nothing(sweep):
  root, runs = sweep
  _ok(runs['grid'])
  _ok(_run('--grid', '--methods=fedncf', '--learning_rates=0.05', '--weight_decays=0',
           f'--output_dir={root}'))
  chosen = json.loads((root / 'chosen.json').read_text())
  assert set(chosen) == {'fedmf'}  # the earlier grid of FedMF is kept; FedNCF lacks its lr-0.01 cell
  fedncf = [line for line in (root / 'choosing.md').read_text().splitlines() if '| fedncf |' in line]
  assert fedncf[0].endswith('| - | none: 1 of 2 cells finished |')  # lr 0.05 ran, lr 0.01 did not
  assert len(pd.read_csv(root / 'grid.csv')) == 3
  report = _ok(_run('--table=2', '--methods=fedmf,pfedrec', '--report_only', f'--output_dir={root}'))
  assert not (root / 'pfedrec-s0').exists()
  assert '| FedMF | 1 |' in report.stdout and '| PFedRec |' not in report.stdout


def test_privacy_analysis_reports_the_attack_auc_and_epsilon(sweep):
  root, runs = sweep
  _ok(runs['privacy'])
  summary = json.loads((root / 'fedmf-attack-delta0.02-s0/summary.json').read_text())
  assert 0.0 <= summary['attack_auc'] <= 1.0
  from tff_rqfed.experiments import tables
  assert summary['privacy']['epsilon_per_round'] == pytest.approx(2 * tables.LAPLACE_CLIP / 0.02)
  assert summary['privacy']['rounds'] == summary['rounds_run']
  row = [line for line in (root / 'privacy.md').read_text().splitlines() if 'FedMF, delta 0.02' in line][0]
  assert f"{summary['attack_auc']:.3f}" in row and f'{2 * tables.LAPLACE_CLIP / 0.02:.3f}' in row


def test_longtail_analysis_reports_each_popularity_third_from_table2s_cells(sweep):
  root, runs = sweep
  _ok(runs['longtail'])
  summary = json.loads((root / 'fedmf-s0' / 'summary.json').read_text())  # Table 2's cell, shared
  groups = summary['test_item_groups']
  assert sum(groups[g]['items'] for g in ('head', 'torso', 'tail')) == 40
  row = [line for line in (root / 'longtail.md').read_text().splitlines() if line.startswith('| FedMF |')][0]
  for g in ('head', 'torso', 'tail'):
    if groups[g]['recall@10'] is not None:
      assert f"{groups[g]['recall@10']:.4f}" in row
  assert (root / 'longtail.png').exists()
  cells = pd.read_csv(root / 'cells.csv').set_index('cell')
  assert cells.loc['mostpop-s0', 'group/head/items'] == groups['head']['items']


def test_coldstart_analysis_holds_items_out_and_scores_them_as_a_group(sweep):
  root, runs = sweep
  _ok(runs['coldstart'])
  summary = json.loads((root / 'rqfedrec-cold0.1-s0' / 'summary.json').read_text())
  groups = summary['test_item_groups']
  assert groups['cold']['items'] == 4 and groups['warm']['items'] == 36  # 10% of the 40 quick items
  assert groups['cold']['test_pairs'] > 0 and groups['cold']['recall@10'] is not None
  table = (root / 'coldstart.md').read_text()
  assert '| RQFedRec | 1 |' in table and 'cold Recall@10' in table
  assert (root / 'coldstart.png').exists()


def test_budget_analysis_plots_ndcg_against_the_upload_of_each_cell(sweep):
  root, runs = sweep
  _ok(runs['budget'])
  table = (root / 'budget.md').read_text()
  assert '| FedMF, d 32 | 1 |' in table
  cells = pd.read_csv(root / 'cells.csv').set_index('cell')
  assert cells.loc['fedmf-d32-s0', 'upload'] == 40 * 8  # --quick keeps d = 8 and M = 4
  assert (root / 'budget.png').stat().st_size > 0


def test_sparse_analysis_trains_with_a_sample_of_the_clients_each_round(sweep):
  root, runs = sweep
  _ok(runs['sparse'])
  flags_json = json.loads((root / 'rqfedrec-frac0.5-s0' / 'flags.json').read_text())
  assert flags_json['client_fraction'] == 0.5
  assert json.loads((root / 'rqfedrec-frac0.5-s0' / 'summary.json').read_text())['rounds_run'] == 2
  assert '| RQFedRec, 0.5 of the clients | 1 |' in (root / 'sparse.md').read_text()


def test_figure4_releases_and_draws_the_similarity_change_between_rounds(sweep):
  root, runs = sweep
  proc = _ok(runs['figure4'])
  released = pd.read_csv(root / 'rqfedrec-similarity-s0' / 'similarity_change.csv')
  assert released['round'].tolist() == [1, 2]
  assert len(json.loads(released['blocks'][0])) == 20  # 20 item groups of the 40 quick items
  assert (root / 'figure4.png').stat().st_size > 0
  assert 'Mean |change of item-item cosine similarity|' in (root / 'figure4.md').read_text()
  assert 'RQFedRec' in proc.stdout


def test_rerun_reads_finished_cells_instead_of_running_them(sweep):
  root, runs = sweep
  _ok(runs['table2'])
  before = {p: p.stat().st_mtime_ns for p in root.glob('*-s0/summary.json')}
  again = _ok(_run('--table=2', '--methods=mostpop,fedmf', f'--output_dir={root}'))
  assert {p: p.stat().st_mtime_ns for p in root.glob('*-s0/summary.json')} == before
  assert (root / 'table2.md').read_text() in again.stdout


def test_a_run_of_some_rows_keeps_the_other_finished_rows_in_the_table(sweep):
  root, runs = sweep
  _ok(runs['table2'])  # MostPop and FedMF
  proc = _ok(_run('--table=2', '--methods=mostpop', f'--output_dir={root}'))
  table = (root / 'table2.md').read_text()
  assert '| MostPop | 1 |' in table and '| FedMF | 1 |' in table
  assert '| FedNCF |' not in table and not (root / 'fedncf-s0').exists()  # unfinished rows: not run
  assert table in proc.stdout


def test_dry_run_lists_finished_and_unfinished_cells(sweep):
  root, _ = sweep
  proc = _ok(_run('--table=2', '--methods=fedmf,fedncf', '--dry_run', f'--output_dir={root}'))
  lines = dict(line.split('\t')[:2] for line in proc.stdout.splitlines())
  assert lines == {'fedmf-s0': 'finished', 'fedncf-s0': 'to run'}
  assert not (root / 'fedncf-s0').exists()


def test_pre_grid_hyperparameters_ask_for_other_cells_than_the_validated_ones(sweep):
  root, _ = sweep
  proc = _ok(_run('--table=2', '--methods=fedmf,mostpop', '--hyperparameters=pre_grid', '--dry_run',
                  f'--output_dir={root}'))
  lines = {line.split('\t')[0]: line.split('\t') for line in proc.stdout.splitlines()}
  assert lines['mostpop-s0'][1] == 'finished'  # no learning rate: the same cell in both sets
  assert lines['fedmf-s0'][1].startswith('refused: ')  # its folder holds the validated run
  assert lines['fedmf-s0'][1].endswith('from --hyperparameters (validated or pre_grid)')
  assert {'--learning_rate=0.01', '--weight_decay=0.0'} <= set(lines['fedmf-s0'][2].split(' '))


@pytest.mark.parametrize('args, message', [
    (['--table=9'], 'error: --table=9 is not implemented; implemented tables: [2, 3, 4, 5, 6, 7, 8]'),
    (['--figure=5'], 'error: --figure=5 is not implemented; implemented figures: [3, 4]'),
    (['--grid'], 'error: --grid needs --methods'),
    (['--table=2', '--figure=3'], 'error: give exactly one of --table=N, --figure=N, --analysis=NAME or --grid'),
    (['--table=4', '--grid', '--methods=fedmf'], 'error: --table=4 has no cells to choose hyperparameters for'),
    (['--grid', '--analysis=budget', '--methods=fedmf-d7'],
     "error: grid methods ['fedmf-d7'] are not trainable rows of budget"),
    (['--table=2', '--methods=nope'], "error: --methods=nope matches no row of table2"),
    (['--table=2', '--seeds=a'], "error: --seeds must be integers, got 'a'"),
    (['--grid', '--methods=fedmf', '--hyperparameters=pre_grid'],
     'error: --hyperparameters does not apply to --grid'),
])
def test_bad_request_is_one_line_and_exit_status_2(tmp_path, args, message):
  proc = _run(*args, f'--output_dir={tmp_path}', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(message)
  assert not list(tmp_path.glob('*/summary.json'))


def test_the_runner_imports_no_tensorflow_so_a_refused_request_answers_at_once():
  """Cells run in their own processes; only Table 4 builds TFF computations in the runner's."""
  proc = subprocess.run(
      [sys.executable, '-c', 'import sys; import launchers.experiments; '
       'print(sorted(m for m in ("tensorflow", "tensorflow_federated") if m in sys.modules))'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == '[]'


def test_ml1m_gpfedrec_cells_run_in_the_client_shards_that_bound_their_memory(tmp_path):
  command = [sys.executable, '-m', 'launchers.experiments', '--dataset=ml-1m', '--table=2',
             '--methods=gpfedrec,fedmf', '--seeds=0', '--dry_run', '--progress=false',
             f'--output_dir={tmp_path}']
  proc = _ok(subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')))
  commands = {line.split('\t')[0]: line.split('\t')[2].split(' ') for line in proc.stdout.splitlines()}
  assert '--client_shards=4' in commands['gpfedrec-s0']
  assert not any(arg.startswith('--client_shards') for arg in commands['fedmf-s0'])
  assert list(tmp_path.iterdir()) == []  # a dry run writes nothing

"""The tables' cells carry each method's validated hyperparameters; tables put the paper beside us."""

from __future__ import annotations

import pandas as pd
import pytest

from tff_rqfed import hyperparameters
from tff_rqfed.experiments import tables

ML100K = {'dataset': 'ml-100k'}


def test_table2_has_every_method_for_every_seed_with_validated_hyperparameters():
  plan = tables.cells('table2', dataset_flags=ML100K, seeds=[0, 1, 2])
  assert len(plan) == 9 * 3
  assert len({cell.name for cell in plan}) == len(plan)
  fedcia = [c for c in plan if c.name == 'fedcia-s1'][0].flag_dict
  assert fedcia == {'algorithm': 'fedcia', 'dataset': 'ml-100k', 'seed': 1,
                    'learning_rate': hyperparameters.DEFAULT_LEARNING_RATE['fedcia'],
                    'weight_decay': hyperparameters.DEFAULT_WEIGHT_DECAY['fedcia'],
                    'init_scale': hyperparameters.DEFAULT_INIT_SCALE['fedcia'], 'min_rounds': 0}
  assert [c for c in plan if c.name == 'mostpop-s0'][0].flag_dict == {
      'algorithm': 'mostpop', 'dataset': 'ml-100k', 'seed': 0}


def test_pre_grid_cells_are_the_ones_the_tables_ran_before_the_grid():
  validated = tables.cells('table2', dataset_flags=ML100K, seeds=[0], methods=['fedmf', 'fedcia'])
  pre_grid = tables.cells('table2', dataset_flags=ML100K, seeds=[0], methods=['fedmf', 'fedcia'],
                          hyperparameter_set='pre_grid')
  assert [c.name for c in pre_grid] == [c.name for c in validated] == ['fedmf-s0', 'fedcia-s0']
  assert pre_grid[0].flag_dict == {**validated[0].flag_dict, 'learning_rate': 0.01, 'weight_decay': 0.0,
                                   'min_rounds': 0}
  assert validated[0].flag_dict['min_rounds'] == 30
  assert pre_grid[1] == validated[1]  # FedCIA has not been through the grid: one cell in both sets


def test_table3_runs_one_user_per_client_in_its_own_folder():
  plan = tables.cells('table3', dataset_flags=ML100K, seeds=[0])
  assert [c.name for c in plan] == ['per_user/pfedrec-s0', 'per_user/gpfedrec-s0', 'per_user/fedrap-s0',
                                    'per_user/fedmf-s0', 'per_user/rqfedrec-s0']
  assert all(c.flag_dict['partition'] == 'per_user' for c in plan)
  # Shards bound the worker's memory (FedRAP's clients train three tables, GPFedRec's shards move a
  # table in and out per client: more, smaller shards).
  assert {c.name: c.flag_dict.get('client_shards') for c in plan} == {
      'per_user/pfedrec-s0': 8, 'per_user/gpfedrec-s0': 32, 'per_user/fedrap-s0': 32,
      'per_user/fedmf-s0': 8, 'per_user/rqfedrec-s0': 8}


def test_table6_rows_are_rqfedrec_with_each_code_id_source():
  plan = tables.cells('table6', dataset_flags=ML100K, seeds=[0], methods=['rqfedrec-hash', 'rqfedrec'])
  assert [(c.name, c.flag_dict['algorithm'], c.flag_dict.get('code_ids')) for c in plan] == [
      ('rqfedrec-hash-s0', 'rqfedrec', 'hash'), ('rqfedrec-s0', 'rqfedrec', None)]


def test_extra_flags_apply_to_their_algorithm_only():
  plan = tables.cells('table2', dataset_flags=ML100K, seeds=[0], methods=['fedmf', 'rqfedrec', 'mostpop'],
                      extra={'rqfedrec': {'levels': 2}})
  assert [c.flag_dict.get('levels') for c in plan] == [None, None, 2]


def test_unknown_table_is_refused_with_the_implemented_ones():
  with pytest.raises(ValueError, match=r"table9 is not implemented; implemented: \['budget', 'coldstart', 'figure3', 'figure4', 'longtail', 'privacy', 'sparse', 'table2'"):
    tables.cells('table9', dataset_flags=ML100K, seeds=[0])


def test_tables_7_8_and_figure_3_share_cells_with_other_targets_where_the_flags_agree():
  privacy = {c.name: c for c in tables.cells('privacy', dataset_flags=ML100K, seeds=[0])}
  table8 = tables.cells('table8', dataset_flags=ML100K, seeds=[0])
  assert [c.name for c in table8] == ['rqfedrec-attack-delta0-s0', 'rqfedrec-attack-delta0.02-s0',
                                      'rqfedrec-attack-delta0.04-s0', 'rqfedrec-attack-delta0.06-s0',
                                      'rqfedrec-attack-delta0.08-s0']
  for cell in table8:  # Table 8 shares the privacy analysis's RQFedRec cells (0.06 is its own)
    if cell.name in privacy:
      assert cell.flag_dict == privacy[cell.name].flag_dict
  assert table8[3].flag_dict['laplace_scale'] == 0.06
  assert table8[3].flag_dict['laplace_clip'] == tables.LAPLACE_CLIP
  table7 = tables.cells('table7', dataset_flags=ML100K, seeds=[0])
  assert [(c.name, c.flag_dict['noise_ratio']) for c in table7[:2]] == [
      ('fedmf-noise0.05-s0', 0.05), ('rqfedrec-noise0.05-s0', 0.05)]
  figure3 = {c.row: c for c in tables.cells('figure3', dataset_flags=ML100K, seeds=[0])}
  assert figure3['w/o C (FedMF)'].name == 'fedmf-s0'
  assert figure3['w/o CC'].flag_dict['channels'] == 'semantic'
  assert figure3['Fix CC'].flag_dict['fix_collaborative_ids'] is True
  assert set(tables.PAPER['table7']['ml-100k']) == {row.label for row in tables.SPECS['table7']['rows']}
  assert set(tables.PAPER['table8']['ml-100k']) == {row.label for row in tables.SPECS['table8']['rows']}


def test_privacy_analysis_attacks_three_methods_at_four_deltas_with_the_stated_clip():
  plan = tables.cells('privacy', dataset_flags=ML100K, seeds=[0])
  assert len(plan) == 3 * 4 and all(c.flag_dict['attack'] is True for c in plan)
  by_name = {c.name: c.flag_dict for c in plan}
  assert by_name['rqfedrec-attack-delta0.04-s0']['laplace_scale'] == 0.04
  assert by_name['rqfedrec-attack-delta0.04-s0']['laplace_clip'] == tables.LAPLACE_CLIP
  assert by_name['fedmf-attack-delta0-s0']['laplace_clip'] == 0.0
  assert by_name['fedcia-attack-delta0.08-s0']['fedcia_noise'] == 0.08
  assert 'laplace_scale' not in by_name['fedcia-attack-delta0.08-s0']


def test_grid_is_the_papers_learning_rate_by_weight_decay_grid():
  plan = tables.grid_cells(['fedmf'], dataset_flags=ML100K)
  pairs = {(c.flag_dict['learning_rate'], c.flag_dict['weight_decay']) for c in plan}
  assert pairs == {(lr, wd) for lr in (0.01, 0.001, 0.0001) for wd in (0.0, 1e-6, 1e-3)}
  assert 'grid/fedmf-lr0.001-wd1e-06-s0' in {c.name for c in plan}
  with pytest.raises(ValueError, match=r"grid methods \['mostpop'\] are not trainable"):
    tables.grid_cells(['mostpop'], dataset_flags=ML100K)


def test_grid_over_a_targets_rows_keeps_each_rows_flags_in_the_targets_own_folder():
  plan = tables.grid_cells(['fedmf-d32', 'rqfedrec-m16'], dataset_flags=ML100K, target='budget',
                           learning_rates=(0.01, 0.001), weight_decays=(1e-6,))
  by_name = {c.name: c for c in plan}
  assert sorted(by_name) == ['grid/budget/fedmf-d32-lr0.001-wd1e-06-s0', 'grid/budget/fedmf-d32-lr0.01-wd1e-06-s0',
                             'grid/budget/rqfedrec-m16-lr0.001-wd1e-06-s0',
                             'grid/budget/rqfedrec-m16-lr0.01-wd1e-06-s0']
  cell = by_name['grid/budget/fedmf-d32-lr0.01-wd1e-06-s0']
  assert cell.row == 'fedmf-d32'  # chosen-budget.json is keyed by the stem
  assert cell.flag_dict['embedding_dim'] == 32 and cell.flag_dict['learning_rate'] == 0.01
  assert cell.flag_dict['min_rounds'] == hyperparameters.VALIDATED_MIN_ROUNDS
  assert by_name['grid/budget/rqfedrec-m16-lr0.001-wd1e-06-s0'].flag_dict['codes_per_level'] == 16
  with pytest.raises(ValueError, match=r"grid methods \['fedmf-d7'\] are not trainable rows of budget"):
    tables.grid_cells(['fedmf-d7'], dataset_flags=ML100K, target='budget')
  with pytest.raises(ValueError, match=r"grid methods \['mostpop'\] are not trainable rows of longtail"):
    tables.grid_cells(['mostpop'], dataset_flags=ML100K, target='longtail')


def _record(row, seed, recall, ndcg, paper_ndcg, **extra):
  return {'cell': f'{row}-s{seed}', 'row': row, 'test/recall@10': recall, 'test/mrr@10': 0.3,
          'test/ndcg@10': ndcg, 'test_paper/recall@10': recall, 'test_paper/mrr@10': 0.5,
          'test_paper/ndcg@10': paper_ndcg, 'rounds_run': 20, 'seconds_per_round': 3.0,
          'upload': 861184, 'download': 12, **extra}


def test_markdown_averages_seeds_and_puts_the_papers_numbers_beside_ours():
  records = pd.DataFrame([_record('FedMF', 0, 0.16, 0.48, 0.60), _record('FedMF', 1, 0.18, 0.50, 0.62),
                          _record('MostPop', 0, 0.0975, 0.325, 0.4)])
  text = tables.markdown('table2', records, dataset='ml-100k')
  fedmf = [line for line in text.splitlines() if line.startswith('| FedMF |')][0].split(' | ')
  assert fedmf[1:4] == ['2', '0.1700 ± 0.0141', '0.3000 ± 0.0000']
  assert fedmf[7:10] == ['0.1639', '0.5527', '0.6079']  # the paper's Table 2 row
  assert fedmf[10:] == ['20 ± 0', '3.0 ± 0.0', '861,184', '12 |']
  mostpop = [line for line in text.splitlines() if line.startswith('| MostPop |')][0].split(' | ')
  assert mostpop[7:10] == ['-', '-', '-']  # not in the paper
  assert '| RQFedRec |' not in text  # rows without cells are left out


def test_markdown_says_when_cells_ran_on_more_than_one_machine_or_an_unknown_one():
  one = [_record('FedMF', seed, 0.16, 0.48, 0.60, cpu='AMD EPYC', cpu_features='avx2 avx512f')
         for seed in (0, 1)]
  assert 'machines' not in tables.markdown('table2', pd.DataFrame(one), dataset='ml-100k')
  two = one + [_record('RQFedRec', 0, 0.16, 0.48, 0.60, cpu='Intel Xeon', cpu_features='avx2')]
  text = tables.markdown('table2', pd.DataFrame(two), dataset='ml-100k')
  assert 'The cells ran on 2 machines: AMD EPYC (avx2 avx512f); Intel Xeon (avx2).' in text
  older = one + [_record('RQFedRec', 0, 0.16, 0.48, 0.60)]  # a summary written before the record
  text = tables.markdown('table2', pd.DataFrame(older), dataset='ml-100k')
  assert '1 of 3 cells do not record their machine' in text and 'ran on' not in text
  assert '1 of 1 cells do not record' in tables.markdown(
      'table2', pd.DataFrame([_record('FedMF', 0, 0.1, 0.4, 0.5)]), dataset='ml-100k')


def test_choosing_table_marks_the_best_validation_ndcg_per_method():
  records = pd.DataFrame([
      {'row': 'fedmf', 'flag_learning_rate': lr, 'flag_weight_decay': wd, 'valid/ndcg@10': v}
      for lr, wd, v in [(0.01, 0.0, 0.20), (0.01, 1e-6, 0.21), (0.001, 0.0, 0.19), (0.001, 1e-6, 0.15)]])
  text, chosen = tables.choosing_markdown(records)
  assert chosen == {'fedmf': {'learning_rate': 0.01, 'weight_decay': 1e-6, 'valid/ndcg@10': 0.21}}
  assert text.splitlines()[2] == ('| fedmf | 0.2000 | **0.2100** | 0.1900 | 0.1500 | lr 0.01, wd 1e-06 |')


def test_choosing_table_names_no_choice_for_a_row_with_unfinished_cells():
  complete = [(0.01, 0.0, 0.20), (0.01, 1e-6, 0.21), (0.001, 0.0, 0.19), (0.001, 1e-6, 0.15)]
  records = pd.DataFrame(
      [{'row': 'fedmf', 'flag_learning_rate': lr, 'flag_weight_decay': wd, 'valid/ndcg@10': v}
       for lr, wd, v in complete]
      + [{'row': 'gpfedrec', 'flag_learning_rate': 0.001, 'flag_weight_decay': wd, 'valid/ndcg@10': v}
         for wd, v in [(0.0, 0.11), (1e-6, 0.12)]])
  text, chosen = tables.choosing_markdown(records)
  assert list(chosen) == ['fedmf']  # gpfedrec's lr-0.01 cells are missing: its best so far is no choice
  assert text.splitlines()[3] == '| gpfedrec | - | - | 0.1100 | 0.1200 | none: 2 of 4 cells finished |'


def test_budget_varies_fedmfs_d_and_rqfedrecs_m_and_d_and_shares_table2s_default_cells():
  budget = {c.name: c.flag_dict for c in tables.cells('budget', dataset_flags={'dataset': 'ml-100k'}, seeds=[0])}
  table2 = {c.name: c.flag_dict for c in tables.cells('table2', dataset_flags={'dataset': 'ml-100k'}, seeds=[0])}
  assert budget['fedmf-s0'] == table2['fedmf-s0'] and budget['rqfedrec-s0'] == table2['rqfedrec-s0']
  assert [budget[f'fedmf-d{d}-s0']['embedding_dim'] for d in (32, 64, 128, 256)] == [32, 64, 128, 256]
  assert [budget[f'rqfedrec-m{m}-s0']['codes_per_level'] for m in (16, 32, 64, 128)] == [16, 32, 64, 128]
  assert [(budget[f'rqfedrec-d{d}-s0']['embedding_dim'], budget[f'rqfedrec-d{d}-s0'].get('codes_per_level'))
          for d in (32, 64, 128, 256)] == [(32, None), (64, None), (128, None), (256, None)]  # M: default
  assert len(budget) == 14


def test_budget_rows_chosen_on_their_own_validation_carry_their_learning_rate_in_the_validated_set_only():
  validated = {c.name: c.flag_dict for c in tables.cells('budget', dataset_flags=ML100K, seeds=[1])}
  pre_grid = {c.name: c.flag_dict for c in tables.cells('budget', dataset_flags=ML100K, seeds=[1],
                                                        hyperparameter_set='pre_grid')}
  chosen = hyperparameters.ROW_CHOICES['budget']
  assert chosen  # the grid has chosen for some rows
  for stem, values in chosen.items():
    assert {k: validated[f'{stem}-s1'][k] for k in values} == values
    assert values['learning_rate'] in hyperparameters.LEARNING_RATE_GRID
    assert pre_grid[f'{stem}-s1']['learning_rate'] == 0.01 and pre_grid[f'{stem}-s1']['weight_decay'] == 0.0
  for name in ('fedmf-s1', 'rqfedrec-s1'):  # d = 512, M = 256: the algorithm's grid, Table 2's cells
    assert validated[name]['learning_rate'] == hyperparameters.DEFAULT_LEARNING_RATE[name[:-3]]


def test_table3_rows_chosen_for_one_user_per_client_keep_their_choice_out_of_the_100_client_tables():
  validated = {c.name: c.flag_dict for c in tables.cells('table3', dataset_flags=ML100K, seeds=[0])}
  pre_grid = {c.name: c.flag_dict for c in tables.cells('table3', dataset_flags=ML100K, seeds=[0],
                                                        hyperparameter_set='pre_grid')}
  chosen = hyperparameters.ROW_CHOICES['table3']
  assert chosen  # the grid over Table 3's rows has chosen for some rows
  for stem, values in chosen.items():
    flags = validated[f'per_user/{stem}-s0']
    assert {k: flags[k] for k in values} == values and flags['partition'] == 'per_user'
    assert pre_grid[f'per_user/{stem}-s0']['learning_rate'] == 0.01
  # Rows not searched with one user per client keep their algorithm's values, and the same algorithms'
  # 100-client cells (Table 2) keep theirs: a row's choice stays in its own table.
  for stem in {flags['algorithm'] for flags in validated.values()} - set(chosen):
    assert validated[f'per_user/{stem}-s0']['learning_rate'] == hyperparameters.DEFAULT_LEARNING_RATE[stem]
  for stem in chosen:
    hundred_clients = tables.cells('table2', dataset_flags=ML100K, seeds=[0], methods=[stem])[0].flag_dict
    assert hundred_clients['learning_rate'] == hyperparameters.DEFAULT_LEARNING_RATE[stem]


def test_every_row_choice_names_a_row_of_its_target():
  for target, rows in hyperparameters.ROW_CHOICES.items():
    stems = {row.stem for row in tables.spec_of(target)['rows']}
    assert set(rows) <= stems, sorted(set(rows) - stems)
  with pytest.raises(ValueError, match="hyperparameter set 'tuned' is unknown"):
    hyperparameters.row_choice('budget', 'fedmf-d32', 'tuned')


def test_every_budget_curve_names_rows_of_the_budget_and_every_row_is_on_a_curve():
  spec = tables.spec_of('budget')
  labels = [row.label for row in spec['rows']]
  on_curves = [label for curve in spec['curves'].values() for label in curve]
  assert set(on_curves) == set(labels)
  assert on_curves.count('RQFedRec, M 256') == 2  # d 512, M 256 ends both RQFedRec lines


def test_sparse_samples_a_share_of_the_clients_and_shares_table2s_full_cells():
  sparse = {c.name: c.flag_dict for c in tables.cells('sparse', dataset_flags={'dataset': 'ml-100k'}, seeds=[0])}
  table2 = {c.name: c.flag_dict for c in tables.cells('table2', dataset_flags={'dataset': 'ml-100k'}, seeds=[0])}
  assert sparse['fedmf-s0'] == table2['fedmf-s0'] and sparse['rqfedrec-s0'] == table2['rqfedrec-s0']
  assert sparse['fedmf-frac0.1-s0']['client_fraction'] == 0.1
  assert sparse['rqfedrec-frac0.5-s0']['client_fraction'] == 0.5


def test_sparse_cells_count_patience_floor_round_cap_and_validation_in_passes_over_the_clients():
  sparse = {c.name: c.flag_dict for c in tables.cells('sparse', dataset_flags={'dataset': 'ml-100k'}, seeds=[0])}
  # FedMF's validated floor 30 and RQFedRec's T_warm + tau = 30, patience 10, cap 300 and validation
  # every round, times 1/f.
  rule = ('patience', 'min_rounds', 'rounds', 'eval_every')
  for stem in ('fedmf', 'rqfedrec'):
    assert {k: sparse[f'{stem}-frac0.1-s0'][k] for k in rule} == {
        'patience': 100, 'min_rounds': 300, 'rounds': 3000, 'eval_every': 10}
    assert {k: sparse[f'{stem}-frac0.5-s0'][k] for k in rule} == {
        'patience': 20, 'min_rounds': 60, 'rounds': 600, 'eval_every': 2}
    assert not {'patience', 'rounds', 'eval_every'} & set(sparse[f'{stem}-s0'])  # Table 2's cells
  # The set's floor is what is scaled (FedMF has none before the grid), and the runner's --rounds caps.
  pre_grid = {c.name: c.flag_dict for c in tables.cells('sparse', dataset_flags={'dataset': 'ml-100k'}, seeds=[0],
                                                        hyperparameter_set='pre_grid')}
  assert pre_grid['fedmf-frac0.1-s0']['min_rounds'] == 0 and pre_grid['rqfedrec-frac0.1-s0']['min_rounds'] == 300
  capped = {c.name: c.flag_dict for c in tables.cells('sparse', dataset_flags={'dataset': 'ml-100k', 'rounds': 2},
                                                      seeds=[0])}
  assert capped['fedmf-frac0.1-s0']['rounds'] == 2


def test_dataset_memory_flags_shard_only_the_algorithms_that_need_it_on_that_dataset():
  ml1m = tables.cells('table2', dataset_flags={'dataset': 'ml-1m'}, seeds=[0],
                      methods=['gpfedrec', 'fedcia', 'fedrap', 'fedmf', 'mostpop'],
                      extra=tables.DATASET_MEMORY_FLAGS['ml-1m'])
  assert {c.name: c.flag_dict.get('client_shards') for c in ml1m} == {
      'gpfedrec-s0': 4, 'fedcia-s0': 4, 'fedrap-s0': 2, 'fedmf-s0': None, 'mostpop-s0': None}
  assert 'ml-100k' not in tables.DATASET_MEMORY_FLAGS  # ML-100k's cells stay as they ran

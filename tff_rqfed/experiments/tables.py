"""The paper's tables as sweeps of cells, the paper's numbers, and the tables written from the results.

Each table is a list of rows (a label and the `launchers.simulate` flags that make the method) run
for every seed; `cells` turns it into `cells.Cell`s for one dataset, with each method's learning
rate, weight decay and initialisation scale from a named set of `tff_rqfed.hyperparameters` (the
validated values, or `pre_grid` for the tables run before the grid) passed explicitly. Implemented
(`SPECS`): Table 2 (overall comparison, 100 clients), Table 3 (one user per client), Table 6
(codebook alternatives), Table 7 (noisy interactions), Table 8 (Laplace delta), Figure 3
(ablations), and the validation grid of Sec. 6.1 (`grid_cells`; docs/RESULTS.md, "The validation
grid"). Rows of different targets with the same flags share a cell (Table 8's rows are the privacy
analysis's RQFedRec cells; Figure 3's w/o C is Table 2's FedMF). The paper's numbers (`PAPER`) use
its metric code for MRR and NDCG (`test_paper` here); its recall equals ours.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tff_rqfed import hyperparameters
from tff_rqfed.evaluation import item_groups
from tff_rqfed.experiments.cells import Cell

METRICS = ('recall@10', 'mrr@10', 'ndcg@10')
PER_USER_SHARDS = 8  # Table 3's client shards (see SPECS['table3'])
FEDRAP_PER_USER_SHARDS = 32  # FedRAP's, whose clients each train three I x d tables (see SPECS['table3'])
GPFEDREC_PER_USER_SHARDS = 32  # GPFedRec's, whose shards also carry each client's target R_k in
# Flags that bound a cell's memory on one dataset, by algorithm (`launchers.experiments` passes them
# to `cells` as `extra`): they change how a round runs, not what it computes (a sharded sum equals the
# whole one up to float rounding, federated.sharding). Measured with `benchmarks.run_memory` (2 rounds,
# d = 512, 100 clients, 24 GiB machine): GPFedRec on ML-1M as one computation peaks at 7.8 GiB in the
# launcher and 14.9 in the worker, too close to the machine's size for a whole run, so it runs in 4
# shards of 25 clients (a whole run then peaked at 5.4 + 8.2 GB; docs/RESULTS.md "ML-1M"). FedCIA on
# ML-1M as one computation (each client uploads and receives a 3,706 x 3,706 similarity), measured in a
# runner cell by sampling the processes' memory every 20 s from outside, held 17 GB
# in the worker through round 1 and 19.1 at the start of each later round; at round 5 the launcher
# rose to 4.3 GB beside it and the machine fell to 162 MB free, so it runs in 4 shards as well.
# FedRAP on ML-1M as one computation (each client trains D and C, two 3,706 x 512 tables), sampled
# the same way through whole runs, held 16.0-16.8 GB in the worker beside 6.2-6.6 GB in the launcher
# and left 183 MB free at its lowest; in 2 shards its worker held 8.0 GB and its launcher 4.2 GB
# (10.9 GB free), and rounds 1-8 gave the unsharded run's validation metrics to every digit.
DATASET_MEMORY_FLAGS: dict[str, dict[str, dict[str, object]]] = {
    'ml-1m': {'gpfedrec': {'client_shards': 4}, 'fedcia': {'client_shards': 4},
              'fedrap': {'client_shards': 2}},
}


@dataclasses.dataclass(frozen=True)
class Row:
  """A table row: a label, its cell-name stem and the flags of the method."""

  label: str
  stem: str
  flags: tuple[tuple[str, object], ...] = ()

  @property
  def algorithm(self) -> str:
    return dict(self.flags).get('algorithm', self.stem)


def _row(label, stem, **flags):
  flags.setdefault('algorithm', stem)
  return Row(label, stem, tuple(sorted(flags.items())))


# L1 bound of each item row before Eq. 11's noise in Table 8 and the privacy analysis: above most
# trained rows (FedMF at the defaults after 20 rounds, ML-100k: median 43, 99th percentile 58, largest
# 60); `clipped_rows` in rounds.csv says how often it bit (measured: up to 7% of FedMF's rows and 21% of
# RQFedRec's in a round).
LAPLACE_CLIP = 64.0
PRIVACY_COLUMNS = (('attack_auc', 'attack AUC'), ('epsilon_per_round', 'epsilon / round'),
                   ('epsilon_over_run', 'epsilon over the run (delta 1e-5)'))


def _laplace(delta: float) -> dict:
  """Eq. 11's flags at `delta`: the noise and, when there is noise, the stated clip."""
  return {'laplace_scale': delta, 'laplace_clip': LAPLACE_CLIP if delta else 0.0}


SPECS: dict[str, dict] = {
    'table2': {'title': 'Table 2: overall comparison', 'rows': (
        _row('MostPop', 'mostpop'), _row('MF (no aggregation)', 'mf_local'), _row('FedMF', 'fedmf'),
        _row('FedNCF', 'fedncf'), _row('PFedRec', 'pfedrec'), _row('GPFedRec', 'gpfedrec'),
        _row('FedRAP', 'fedrap'), _row('FedCIA', 'fedcia'), _row('RQFedRec', 'rqfedrec'))},
    # One user per client: 943 uploads a round. Summed in 8 shards (federated.sharding), FedMF's worker
    # peaks at 1.7 GiB instead of 9.9 (docs/SPEED.md, "Seconds per round"). GPFedRec's shards also take each
    # client's target R_k in and return every upload for the server's graph (1,682 x 512 each way a
    # client). FedRAP's client trains D, C and a copy of C
    # (I x d each, with Adam moments): with 118 clients a shard its worker peaked at 9.0 GB, with 30 at
    # 5.2 GB (ML-100k, d = 512; docs/RESULTS.md, Table 3).
    'table3': {'title': 'Table 3: one user per client', 'subdir': 'per_user', 'rows': (
        _row('PFedRec', 'pfedrec', partition='per_user', client_shards=PER_USER_SHARDS),
        _row('GPFedRec', 'gpfedrec', partition='per_user', client_shards=GPFEDREC_PER_USER_SHARDS),
        _row('FedRAP', 'fedrap', partition='per_user', client_shards=FEDRAP_PER_USER_SHARDS),
        _row('FedMF', 'fedmf', partition='per_user', client_shards=PER_USER_SHARDS),
        _row('RQFedRec', 'rqfedrec', partition='per_user', client_shards=PER_USER_SHARDS))},
    'table5': {'title': 'Table 5: LLM-based baselines',
               'rows': (_row('FedRLM_con', 'fedrlm_con'), _row('FedRLM_gen', 'fedrlm_gen'),
                        _row('FedAlphaFuse', 'fedalphafuse'),
                        _row('FedAlphaFuse, standardised (official default)', 'fedalphafuse-standardized',
                             algorithm='fedalphafuse', alphafuse_standardize=True),
                        _row('RQFedRec', 'rqfedrec'))},
    'table6': {'title': 'Table 6: codebook alternatives', 'rows': (
        _row('hash-based codebook', 'rqfedrec-hash', algorithm='rqfedrec', code_ids='hash'),
        _row('RQ-VAE codebook', 'rqfedrec-rqvae', algorithm='rqfedrec', code_ids='rq_vae'),
        _row('RQFedRec', 'rqfedrec'))},
    'table7': {'title': 'Table 7: noisy interactions (ratio of each part injected)', 'rows': tuple(
        _row(f'{label}, noise {ratio:.2f}', f'{stem}-noise{ratio:g}', algorithm=stem, noise_ratio=ratio)
        for ratio in (0.05, 0.1, 0.15) for label, stem in (('FedMF', 'fedmf'), ('RQFedRec', 'rqfedrec')))},
    # The rows are the privacy analysis's RQFedRec cells (same folders, same flags, with the attack's
    # AUC), plus delta 0.06; the noisy rows clip each item row to L1 norm LAPLACE_CLIP first, so that
    # epsilon is finite (privacy.py).
    'table8': {'title': f'Table 8: Laplace noise delta of Eq. 11 (RQFedRec, rows clipped to L1 '
                        f'{LAPLACE_CLIP:g})', 'columns': PRIVACY_COLUMNS, 'rows': tuple(
        _row(f'delta {delta:g}', f'rqfedrec-attack-delta{delta:g}', algorithm='rqfedrec', attack=True,
             **_laplace(delta)) for delta in (0.0, 0.02, 0.04, 0.06, 0.08))},
    # Issue 10: the server's attack on one upload, FedMF and RQFedRec under Eq. 11's noise, FedCIA under
    # its own Laplace noise on the similarity (released default 0.001).
    'privacy': {'title': "Privacy: the server's upload attack (AUC) and epsilon", 'columns': PRIVACY_COLUMNS,
                'rows': tuple(
                    _row(f'{label}, delta {delta:g}', f'{stem}-attack-delta{delta:g}', algorithm=stem,
                         attack=True, **noise(delta))
                    for label, stem, noise in (
                        ('FedMF', 'fedmf', _laplace), ('RQFedRec', 'rqfedrec', _laplace),
                        ('FedCIA', 'fedcia', lambda d: {'fedcia_noise': d}))
                    for delta in (0.0, 0.02, 0.04, 0.08))},
    # Issue 9, beyond the paper: does RQFedRec win on rare items? The correct metrics on the test items
    # of each popularity third of the training interactions (evaluation.item_groups). The cells are
    # Table 2's (same flags, same folders): every run since item_groups records the groups.
    'longtail': {'title': 'Long-tail items: test items of the head, torso and tail of the training '
                          'interactions', 'groups': item_groups.POPULARITY_GROUPS, 'rows': (
        _row('MostPop', 'mostpop'), _row('FedMF', 'fedmf'), _row('RQFedRec', 'rqfedrec'))},
    # Issue 9: 10% of the items held out of all training data (data.cold_items); their test interactions
    # are the group 'cold'. RQFedRec reaches them through their codes, FedMF only through its initial rows.
    'coldstart': {'title': 'Cold-start items: 10% of the items held out of all training data',
                  'groups': ('cold', 'warm'), 'rows': tuple(
                      _row(label, f'{stem}-cold0.1', algorithm=stem, cold_item_ratio=0.1)
                      for label, stem in (('MostPop', 'mostpop'), ('FedMF', 'fedmf'),
                                          ('RQFedRec', 'rqfedrec')))},
    # Issue 9: quality against the values each client uploads per round. FedMF's upload is I x d, so d
    # sets it; RQFedRec's is 2 x L x M x d, here M at L = 3, d = 512, and d at L = 3, M = 256. On
    # ML-100k the rows send about the same by budget (FedMF d = 32 ... 512: 53,824 ... 861,184 values;
    # RQFedRec M = 16 ... 256: 49,152 ... 786,432; RQFedRec d = 32 ... 256: 49,152 ... 393,216). The
    # d = 512 and M = 256 rows are Table 2's cells. In the `validated` set a smaller d has the learning
    # rate chosen on its own validation (`hyperparameters.ROW_CHOICES`, `--grid --analysis=budget`);
    # `curves` names the figure's lines (row labels in order).
    'budget': {'title': 'Budget: test NDCG@10 against the values uploaded per client per round',
               'figure': 'budget', 'rows': tuple(
                   _row(f'FedMF, d {d}', 'fedmf' if d == 512 else f'fedmf-d{d}', algorithm='fedmf',
                        **({} if d == 512 else {'embedding_dim': d})) for d in (32, 64, 128, 256, 512)) + tuple(
                   _row(f'RQFedRec, M {m}', 'rqfedrec' if m == 256 else f'rqfedrec-m{m}',
                        algorithm='rqfedrec', **({} if m == 256 else {'codes_per_level': m}))
                   for m in (16, 32, 64, 128, 256)) + tuple(
                   _row(f'RQFedRec, d {d}', f'rqfedrec-d{d}', algorithm='rqfedrec', embedding_dim=d)
                   for d in (32, 64, 128, 256)),
               'curves': {'FedMF, d 32 ... 512': tuple(f'FedMF, d {d}' for d in (32, 64, 128, 256, 512)),
                          'RQFedRec, M 16 ... 256 (d 512)': tuple(f'RQFedRec, M {m}'
                                                                  for m in (16, 32, 64, 128, 256)),
                          'RQFedRec, d 32 ... 512 (M 256)': tuple(f'RQFedRec, d {d}' for d in (32, 64, 128, 256))
                          + ('RQFedRec, M 256',)}},
    # Issue 9: clients sampled per round (launchers.simulate --client_fraction; the others keep their
    # state). Fraction 1 is Table 2's cells; one user per client is Table 3's FedMF and RQFedRec rows.
    # At fraction f the early stop counts passes over the clients: patience, floor, round cap and the
    # validation interval are the full runs' times 1/f (`_stopping_in_passes`); RQFedRec's T_warm and
    # tau stay in rounds (Eq. 10).
    'sparse': {'title': 'Sparse participation: a share of the 100 clients sampled in each round', 'rows': tuple(
        _row(f'{label}, {fraction:g} of the clients', stem if fraction == 1 else f'{stem}-frac{fraction:g}',
             algorithm=stem, **({} if fraction == 1 else {'client_fraction': fraction}))
        for label, stem in (('FedMF', 'fedmf'), ('RQFedRec', 'rqfedrec')) for fraction in (0.1, 0.5, 1.0))},
    # Sec. 6.4.2: the change of item-item cosine similarity between rounds on the server's item table,
    # over 20 random item groups (simulation._SimilarityTracker), FedMF beside RQFedRec.
    'figure4': {'title': 'Figure 4: change of item-item similarity between rounds', 'figure': 'heatmap',
                'rows': (_row('FedMF', 'fedmf-similarity', algorithm='fedmf', track_similarity=True),
                         _row('RQFedRec', 'rqfedrec-similarity', algorithm='rqfedrec',
                              track_similarity=True))},
    'figure3': {'title': 'Figure 3: ablations', 'figure': 'bars', 'rows': (
        _row('RQFedRec', 'rqfedrec'), _row('w/o C (FedMF)', 'fedmf'),
        _row('w/o CC', 'rqfedrec-wocc', algorithm='rqfedrec', channels='semantic'),
        _row('w/o SC', 'rqfedrec-wosc', algorithm='rqfedrec', channels='collaborative'),
        _row('Fix CC', 'rqfedrec-fixcc', algorithm='rqfedrec', fix_collaborative_ids=True),
        _row('w/o IE', 'rqfedrec-woie', algorithm='rqfedrec', without_item_embedding=True))},
}

# The paper's numbers (Recall@10, MRR@10, NDCG@10; MRR and NDCG from its metric code), by table,
# dataset and row label; rows the paper does not have are absent.
PAPER = {
    'table2': {'ml-100k': {'MF (no aggregation)': (0.0519, 0.2551, 0.3157), 'FedMF': (0.1639, 0.5527, 0.6079),
                    'FedNCF': (0.1713, 0.5390, 0.6001), 'PFedRec': (0.0663, 0.3150, 0.3797),
                    'GPFedRec': (0.1134, 0.4124, 0.4861), 'FedRAP': (0.0391, 0.1559, 0.2036),
                    'FedCIA': (0.1749, 0.5661, 0.6228), 'RQFedRec': (0.1914, 0.6271, 0.6695)},
        'ml-1m': {'MF (no aggregation)': (0.0616, 0.3476, 0.4144), 'FedMF': (0.1264, 0.5524, 0.6111),
                  'FedNCF': (0.1362, 0.5774, 0.6316), 'PFedRec': (0.0373, 0.2738, 0.3315),
                  'GPFedRec': (0.0677, 0.3858, 0.4444), 'FedRAP': (0.0414, 0.2772, 0.3392),
                  'FedCIA': (0.1239, 0.5437, 0.6021), 'RQFedRec': (0.1442, 0.6209, 0.6642)}},
    'table3': {'ml-100k': {'PFedRec': (0.1381, 0.4333, 0.5029), 'GPFedRec': (0.1395, 0.4797, 0.5522),
                    'FedRAP': (0.1423, 0.5132, 0.5630), 'RQFedRec': (0.1620, 0.5688, 0.6132)}},
    'table5': {'ml-100k': {'FedRLM_con': (0.1647, 0.5458, 0.6055), 'FedRLM_gen': (0.1682, 0.5416, 0.6044),
                           'FedAlphaFuse': (0.1556, 0.5321, 0.5903), 'RQFedRec': (0.1914, 0.6271, 0.6695)}},
    'table6': {'ml-100k': {'hash-based codebook': (0.0200, 0.1288, 0.1685),
                    'RQ-VAE codebook': (0.1630, 0.5359, 0.6004), 'RQFedRec': (0.1914, 0.6271, 0.6695)}},
    'table7': {'ml-100k': {'FedMF, noise 0.05': (0.0881, 0.3902, 0.4511),
                           'RQFedRec, noise 0.05': (0.0960, 0.4470, 0.4963),
                           'FedMF, noise 0.10': (0.0586, 0.2924, 0.3475),
                           'RQFedRec, noise 0.10': (0.0811, 0.3896, 0.4415),
                           'FedMF, noise 0.15': (0.0380, 0.2282, 0.2768),
                           'RQFedRec, noise 0.15': (0.0681, 0.3732, 0.4201)}},
    'table8': {'ml-100k': {'delta 0': (0.1914, 0.6271, 0.6695), 'delta 0.02': (0.1900, 0.6327, 0.6705),
                           'delta 0.04': (0.1846, 0.6129, 0.6561), 'delta 0.06': (0.1605, 0.5525, 0.6105),
                           'delta 0.08': (0.1265, 0.4938, 0.5475)}},
}


def tuned_flags(algorithm: str, hyperparameter_set: str = 'validated') -> dict[str, object]:
  """Learning rate, weight decay, init scale and (but for RQFedRec) early-stop floor of `algorithm` in
  the named set of `tff_rqfed.hyperparameters` (none for MostPop)."""
  if algorithm == 'mostpop':
    return {}
  return hyperparameters.defaults(algorithm, hyperparameter_set)


def _stopping_in_passes(flags: dict, hyperparameter_set: str) -> dict:
  """A sparse row's (`client_fraction` f < 1) patience, floor, round cap and validation interval: the
  full runs' times 1/f (`hyperparameters.stopping_in_passes`); the floor is the method's in the set,
  RQFedRec's T_warm + tau."""
  fraction = float(flags.get('client_fraction', 1.0))
  if fraction >= 1.0:
    return {}
  if 'min_rounds' in flags:  # the set's floor (`tuned_flags`); RQFedRec has none there
    floor = int(flags['min_rounds'])
  else:
    floor = hyperparameters.early_stop_floor(
        flags['algorithm'], hyperparameter_set=hyperparameter_set,
        warmup_rounds=int(flags.get('warmup_rounds', hyperparameters.RQFEDREC_WARMUP_ROUNDS)),
        refresh_every=int(flags.get('refresh_every', hyperparameters.RQFEDREC_REFRESH_EVERY)))
  return hyperparameters.stopping_in_passes(fraction, min_rounds=floor)


def _cell(row: Row, name: str, *, dataset_flags: dict, seed: int, overrides: dict | None = None,
          extra: dict | None = None, hyperparameter_set: str = 'validated') -> Cell:
  flags = {**tuned_flags(row.algorithm, hyperparameter_set), **dict(row.flags)}
  flags.update(_stopping_in_passes(flags, hyperparameter_set))  # before dataset_flags: --rounds caps it
  flags.update({**dataset_flags, 'seed': seed})
  flags.update(overrides or {})
  if row.algorithm != 'mostpop':
    flags.update((extra or {}).get(row.algorithm, {}))
  return Cell.make(name, row.label, **flags)


def cells(name: str, *, dataset_flags: dict, seeds, methods=None, extra=None,
          hyperparameter_set: str = 'validated') -> list[Cell]:
  """The cells of table or figure `name`: every row (or those whose stem is in `methods`), every seed.

  `dataset_flags` (e.g. `{'dataset': 'ml-100k'}`) go to every cell; `extra` maps an algorithm to
  more flags (the quick mode's small codebooks, a dataset's `DATASET_MEMORY_FLAGS`);
  `hyperparameter_set` names the learning rates, weight decays and floors (`hyperparameters.SETS`);
  in `validated`, a row chosen on its own (`hyperparameters.ROW_CHOICES`: the budget's smaller d,
  Table 3's one user per client) has its own learning rate and weight decay.
  """
  spec = spec_of(name)
  rows = [row for row in spec['rows'] if methods is None or row.stem in methods]
  prefix = f"{spec['subdir']}/" if 'subdir' in spec else ''
  return [_cell(row, f'{prefix}{row.stem}-s{seed}', dataset_flags=dataset_flags, seed=seed, extra=extra,
                hyperparameter_set=hyperparameter_set,
                overrides=hyperparameters.row_choice(name, row.stem, hyperparameter_set))
          for row in rows for seed in seeds]


def grid_cells(methods, *, dataset_flags: dict, seed: int = 0, extra=None, learning_rates=None,
               weight_decays=None, target: str | None = None) -> list[Cell]:
  """The validation grid of Sec. 6.1: learning rate x weight decay for each method, one seed.

  `methods` are algorithm names (cells `grid/<method>-lr<lr>-wd<wd>-s<seed>`), or with `target` (a
  name of `SPECS`) stems of that target's rows, each cell with its row's flags (the budget's
  `fedmf-d32` is FedMF at d = 32; cells `grid/<target>/<stem>-lr...`): a row whose setting differs
  from the grid's (model size, one user per client) gets its learning rate chosen on its own
  validation (`hyperparameters.ROW_CHOICES`).
  `learning_rates` and `weight_decays` default to the paper's grid (`hyperparameters`).
  """
  if target is None:
    rows, prefix = [_row(method, method) for method in methods], 'grid/'
    unknown = sorted(set(methods) - set(hyperparameters.DEFAULT_LEARNING_RATE))
    if unknown:
      raise ValueError(f'grid methods {unknown} are not trainable algorithms; '
                       f'known: {sorted(hyperparameters.DEFAULT_LEARNING_RATE)}')
  else:
    by_stem = {row.stem: row for row in spec_of(target)['rows']
               if row.algorithm in hyperparameters.DEFAULT_LEARNING_RATE}
    unknown = sorted(set(methods) - set(by_stem))
    if unknown:
      raise ValueError(f'grid methods {unknown} are not trainable rows of {target}; rows: {sorted(by_stem)}')
    rows, prefix = [dataclasses.replace(by_stem[stem], label=stem) for stem in methods], f'grid/{target}/'
  out = []
  for row in rows:
    for lr in learning_rates or hyperparameters.LEARNING_RATE_GRID:
      for wd in weight_decays or hyperparameters.WEIGHT_DECAY_GRID:
        out.append(_cell(row, f'{prefix}{row.stem}-lr{lr:g}-wd{wd:g}-s{seed}', dataset_flags=dataset_flags,
                         seed=seed, overrides={'learning_rate': lr, 'weight_decay': wd}, extra=extra))
  return out


def spec_of(name: str) -> dict:
  if name not in SPECS:
    raise ValueError(f'{name} is not implemented; implemented: {sorted(SPECS)}')
  return SPECS[name]


def cell_record(cell: Cell, summary: dict, *, seconds: float | None) -> dict:
  """One line of cells.csv: the cell, its flags, both metric sets, rounds, time and communication."""
  record = {'cell': cell.name, 'row': cell.row, **{f'flag_{k}': v for k, v in cell.flags}}
  for block in ('test', 'test_paper', 'valid'):
    for metric in METRICS:
      record[f'{block}/{metric}'] = summary.get(block, {}).get(metric)
  for group, entry in summary.get('test_item_groups', {}).items():
    record.update({f'group/{group}/{name}': entry.get(name)
                   for name in ('items', 'test_pairs', *METRICS)})
  communication = summary.get('communication', {})
  privacy = summary.get('privacy', {})
  record.update({'attack_auc': summary.get('attack_auc'), 'attack_advantage': summary.get('attack_advantage'),
                 'epsilon_per_round': privacy.get('epsilon_per_round'),
                 'epsilon_over_run': privacy.get('epsilon_over_run')})
  record.update({'best_round': summary.get('best_round'), 'rounds_run': summary.get('rounds_run'),
                 'seconds_per_round': summary.get('seconds_per_round'), 'wall_seconds': seconds,
                 'upload': communication.get('upload'), 'download': communication.get('download')})
  # Where the cell ran (environment.py; absent from summaries written before it): the same seed can
  # give other metrics on another CPU, so a table mixing machines shows it here.
  environment = summary.get('environment', {})
  cpu = environment.get('cpu', {})
  record.update({'cpu': cpu.get('model'), 'cpu_features': ' '.join(cpu.get('features', [])) or None,
                 'commit': environment.get('commit'),
                 'text_embeddings_sha256': environment.get('input_sha256', {}).get('text_embeddings')})
  return record


def mean_std(values: pd.Series, digits: int = 4) -> str:
  """'mean ± std' over seeds (one value: the value; none: '-'), also used by `launchers.report`."""
  values = values.dropna().astype(float)
  if values.empty:
    return '-'
  if len(values) == 1:
    return f'{values.iloc[0]:.{digits}f}'
  return f'{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}'


def _count(value) -> str:
  return '-' if pd.isna(value) else f'{int(value):,}'


def _rows_with_records(spec: dict, records: pd.DataFrame):
  """(row, its seeds' records) for every row of `spec` that has records, in the spec's order."""
  for row in spec['rows']:
    group = records[records['row'] == row.label] if len(records) else records
    if not group.empty:
      yield row, group


def markdown(name: str, records: pd.DataFrame, *, dataset: str) -> str:
  """The table laid out like the paper's: our metrics (both sets, mean ± std over seeds) beside its."""
  spec = spec_of(name)
  paper = PAPER.get(name, {}).get(dataset, {})
  columns = spec.get('columns', ())
  lines = [f"### {spec['title']}, {dataset}", '',
           '| method | seeds | Recall@10 | MRR@10 | NDCG@10 | paper-code MRR@10 | paper-code NDCG@10 '
           '| paper Recall@10 | paper MRR@10 | paper NDCG@10 | rounds | s/round | upload | download |'
           + ''.join(f' {title} |' for _, title in columns),
           '|---|' + '---|' * (13 + len(columns))]
  for row, group in _rows_with_records(spec, records):
    ours = [mean_std(group[f'test/{m}']) for m in METRICS]
    ours += [mean_std(group[f'test_paper/{m}']) for m in METRICS[1:]]
    theirs = [f'{v:.4f}' for v in paper[row.label]] if row.label in paper else ['-'] * 3
    time_cells = [mean_std(group['rounds_run'], 0), mean_std(group['seconds_per_round'], 1)]
    lines.append(f'| {row.label} | {len(group)} | ' + ' | '.join(ours + theirs + time_cells)
                 + f" | {_count(group['upload'].iloc[0])} | {_count(group['download'].iloc[0])} |"
                 + ''.join(f' {mean_std(group[name], 3) if name in group else "-"} |' for name, _ in columns))
  return '\n'.join(lines + machines_note(records)) + '\n'


def machines_note(records: pd.DataFrame) -> list[str]:
  """Lines saying on how many machines (CPU model and float-kernel features, cells.csv's `cpu` and
  `cpu_features`) the table's cells ran, when that is more than one or unknown for some cells: the
  same seed can give RQFedRec other metrics on another CPU (docs/RESULTS.md, "Reproducibility across
  machines"). No lines when every cell ran on one recorded machine."""
  machine = records.reindex(columns=['cpu', 'cpu_features'])  # absent columns: all unknown
  known = machine[machine['cpu'].notna()]
  machines = sorted({f'{cpu} ({features})' if isinstance(features, str) else str(cpu)
                     for cpu, features in known.itertuples(index=False)})
  unknown = len(records) - len(known)
  if len(machines) <= 1 and not unknown:
    return []
  sentences = [f'The cells ran on {len(machines)} machines: {"; ".join(machines)}.'] if len(machines) > 1 else []
  if unknown:
    sentences.append(f'{unknown} of {len(records)} cells do not record their machine (run before '
                     'the environment record).')
  return ['', ' '.join(sentences) + ' RQFedRec\'s metrics for a seed can differ between machines '
          '(docs/RESULTS.md, "Reproducibility across machines").']


def groups_markdown(name: str, records: pd.DataFrame, *, dataset: str) -> str:
  """Recall@10 and NDCG@10 (correct) on each item group's test items, mean ± std over seeds."""
  spec = spec_of(name)
  groups = spec['groups']
  lines = [f"### {spec['title']}, {dataset}", '',
           '| method | seeds | ' + ' | '.join(f'{g} Recall@10 | {g} NDCG@10' for g in groups)
           + ' | all Recall@10 | all NDCG@10 |', '|---|' + '---|' * (2 * len(groups) + 3)]
  for row, group in _rows_with_records(spec, records):
    cells = [mean_std(group[column]) if column in group else '-'
             for g in groups for column in (f'group/{g}/recall@10', f'group/{g}/ndcg@10')]
    cells += [mean_std(group['test/recall@10']), mean_std(group['test/ndcg@10'])]
    lines.append(f'| {row.label} | {len(group)} | ' + ' | '.join(cells) + ' |')
  sizes = [f"{g}: {_count(records[f'group/{g}/items'].iloc[0])} items, "
           f"{_count(records[f'group/{g}/test_pairs'].iloc[0])} test interactions"
           for g in groups if f'group/{g}/items' in records and len(records)]
  if sizes:
    lines += ['', 'Groups (seed of the first cell): ' + '; '.join(sizes) + '.']
  return '\n'.join(lines + machines_note(records)) + '\n'


def _pair_mask(records: pd.DataFrame, learning_rate: float, weight_decay: float) -> pd.Series:
  return (np.isclose(records['flag_learning_rate'].astype(float), learning_rate)
          & np.isclose(records['flag_weight_decay'].astype(float), weight_decay))


def choosing_markdown(records: pd.DataFrame) -> tuple[str, dict]:
  """The grid as a table of validation NDCG@10 per (lr, weight decay), and the best pair per method.

  The columns are every pair some row has a finished cell for. A row is chosen for only when it has a
  cell in every column: a partial row (cells still running, interrupted or not run) says how many it
  has and stays out of the returned choices, so `chosen.json` never records a choice from part of a
  grid."""
  pairs = set(zip(records['flag_learning_rate'].astype(float), records['flag_weight_decay'].astype(float)))
  pairs = sorted(pairs, key=lambda pair: (-pair[0], pair[1]))  # lr falling, weight decay rising
  lines = ['| method | ' + ' | '.join(f'lr {lr:g}, wd {wd:g}' for lr, wd in pairs) + ' | chosen |',
           '|---|' + '---|' * (len(pairs) + 1)]
  chosen = {}
  for method, group in records.groupby('row', sort=False):
    matches = [group[_pair_mask(group, lr, wd)] for lr, wd in pairs]
    finished = sum(not match.empty for match in matches)
    best = group.loc[group['valid/ndcg@10'].astype(float).idxmax()]
    complete = finished == len(pairs)
    if complete:
      chosen[method] = {'learning_rate': float(best['flag_learning_rate']),
                        'weight_decay': float(best['flag_weight_decay']),
                        'valid/ndcg@10': float(best['valid/ndcg@10'])}
    values = []
    for match in matches:
      value = '-' if match.empty else f"{float(match['valid/ndcg@10'].iloc[0]):.4f}"
      values.append(f'**{value}**' if complete and best.name in match.index else value)
    verdict = (f"lr {chosen[method]['learning_rate']:g}, wd {chosen[method]['weight_decay']:g}"
               if complete else f'none: {finished} of {len(pairs)} cells finished')
    lines.append(f'| {method} | ' + ' | '.join(values) + f' | {verdict} |')
  return '\n'.join(lines) + '\n', chosen

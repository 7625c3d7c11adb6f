r"""Regenerates a table or figure of the paper (or the validation grid) by running its cells, resumably.

  python -m launchers.experiments --table=N [--dataset=ml-100k] [--seeds=0,1,2] [--methods=fedmf,...]
  python -m launchers.experiments --figure=3                          # ablations, bars over seeds
  python -m launchers.experiments --analysis=longtail                 # head / torso / tail items
  python -m launchers.experiments --analysis=coldstart                # items held out of training
  python -m launchers.experiments --analysis=budget                   # NDCG per value uploaded
  python -m launchers.experiments --analysis=sparse                   # 10% / 50% / all clients a round
  python -m launchers.experiments --analysis=privacy --seeds=0        # upload attack AUC, epsilon
  python -m launchers.experiments --grid --methods=fedmf,rqfedrec     # lr x weight decay, seed 0
  python -m launchers.experiments --grid --analysis=budget --methods=fedmf-d32  # the grid of one row
  python -m launchers.experiments --table=4                           # communication, five datasets, no data
  python -m launchers.experiments --table=2 --quick                   # tiny synthetic data, 2 rounds
  python -m launchers.experiments --table=5 --hyperparameters=pre_grid  # as run before the grid

Every cell is one `launchers.simulate` run in `<output_dir>/<cell>` (default output folder
`results/experiments/<dataset>`; `--quick`: `results/experiments/quick`). Finished cells are read, not
run again, so a killed sweep resumes at its first unfinished cell (`tff_rqfed/experiments/cells.py`).
The runner writes `cells.csv` (every cell: flags, both metric sets, rounds, seconds, communication)
and `table<N>.md` / `figure<N>.md` (laid out like the paper's table, its numbers beside ours), a
validation curve per row (`<target>-validation.png`) and for Figure 3 its bars (`figure3.png`); or,
with `--grid`,
`grid.csv`, `choosing.md` and `chosen.json` (the best learning rate and weight decay per method on
validation NDCG@10, for the methods whose every cell finished; copy them into
`tff_rqfed/hyperparameters.py`). `--grid` with a table, figure or
analysis runs the grid over the rows `--methods` names (row stems, each with its row's flags, e.g. the
budget's smaller d) into `grid/<target>/` and writes `grid-<target>.csv`, `choosing-<target>.md` and
`chosen-<target>.json` (copy them into `hyperparameters.ROW_CHOICES`). A cell's learning rate, weight
decay and early-stop floor come from a named set of `tff_rqfed/hyperparameters.py`, the validated
values unless `--hyperparameters=pre_grid` asks for the values the tables were run with before the
grid. A failed
cell does not stop the sweep: the others run, the tables hold what finished, and the exit status is
1 with the failures named.
Table 4 has no cells: each method is built for the paper's five datasets' sizes and its communication
read from the TFF types (`table4.md`, `table4.csv`; `tff_rqfed/experiments/communication_table.py`).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np
import pandas as pd
import tqdm

from tff_rqfed import hyperparameters
from tff_rqfed.evaluation import similarity_change
from tff_rqfed.experiments import cells as cells_lib
from tff_rqfed.experiments import figures
from tff_rqfed.experiments import quick
from tff_rqfed.experiments import tables
from tff_rqfed.results_io import write_atomic

IMPLEMENTED_TABLES = sorted([4] + [int(name[5:]) for name in tables.SPECS if name.startswith('table')])
IMPLEMENTED_FIGURES = sorted(int(name[6:]) for name in tables.SPECS if name.startswith('figure'))
_TABLE = flags.DEFINE_integer('table', None, f'Paper table to regenerate: one of {IMPLEMENTED_TABLES}.')
_FIGURE = flags.DEFINE_integer('figure', None, f'Paper figure to regenerate: one of {IMPLEMENTED_FIGURES}.')
ANALYSES = sorted(name for name in tables.SPECS if not name.startswith(('table', 'figure')))
_ANALYSIS = flags.DEFINE_enum('analysis', None, ANALYSES,
                              "Beyond the paper: 'privacy' (the server's upload attack and epsilon), 'longtail' "
                              "(metrics on the head, torso and tail items), 'coldstart' (10% of the items never trained), "
                              "'budget' (NDCG against the values uploaded), 'sparse' (clients sampled per round).")
_GRID = flags.DEFINE_bool('grid', False, 'Run the learning-rate x weight-decay validation grid instead: '
                          'of the algorithms --methods names, or with --table, --figure or --analysis of '
                          "that target's rows --methods names (row stems).")
_DATASET = flags.DEFINE_enum('dataset', 'ml-100k', ['ml-100k', 'ml-1m'], 'Dataset of the cells.')
_SEEDS = flags.DEFINE_list('seeds', None, 'Seeds (default 0,1,2; the grid and --quick: 0).')
_METHODS = flags.DEFINE_list('methods', None, 'Run only these rows (cell stems, e.g. fedmf,rqfedrec-hash); '
                             'the table still shows every finished row.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Sweep folder (default results/experiments/<dataset or quick>).')
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny synthetic data, 2 rounds, one seed: checks the runner.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List the cells and whether each is finished; run none.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False,
                                 'Write the tables and figures from the finished cells; run none.')
_LEARNING_RATES = flags.DEFINE_list('learning_rates', None,
                                    'With --grid: these learning rates (default the paper grid 0.01,0.001,0.0001).')
_WEIGHT_DECAYS = flags.DEFINE_list('weight_decays', None,
                                   'With --grid: these weight decays (default the paper grid 0,1e-6,1e-3).')
_HYPERPARAMETERS = flags.DEFINE_enum(
    'hyperparameters', 'validated', sorted(hyperparameters.SETS),
    "Learning rates, weight decays and early-stop floors of the cells (tff_rqfed/hyperparameters.py): "
    "'validated' (the grid's choice, no early stop before round 30) or 'pre_grid' (lr 0.01, weight "
    "decay 0, no floor but RQFedRec's: the values most ML-100k tables of docs/RESULTS.md were run with).")
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Round cap of every cell (default the launcher\'s 300).')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar over the cells.')
_KEEP_PROGRAM_STATE = flags.DEFINE_bool(
    'keep_program_state', False, "Keep each finished cell's saved program states (only --resume reads "
    'them; about 0.5 GB a GPFedRec cell at d = 512); by default they are removed once a cell finishes.')


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _seeds() -> list[int]:
  default = ['0'] if (_GRID.value or _QUICK.value) else ['0', '1', '2']
  try:
    return [int(s) for s in (_SEEDS.value or default)]
  except ValueError:
    _fail(f'--seeds must be integers, got {",".join(_SEEDS.value)!r}')


def _floats(flag) -> tuple[float, ...] | None:
  if flag.value is None:
    return None
  try:
    return tuple(float(v) for v in flag.value)
  except ValueError:
    _fail(f'--{flag.name} must be numbers, got {",".join(flag.value)!r}')


def _named_target() -> str | None:
  """'table<N>', 'figure<N>' or the analysis the flags name (None: only --grid)."""
  if _ANALYSIS.value:
    return _ANALYSIS.value
  if _TABLE.value is not None:
    return f'table{_TABLE.value}'
  return f'figure{_FIGURE.value}' if _FIGURE.value is not None else None


def _target() -> str:
  """'table<N>', 'figure<N>', the analysis, 'grid' or 'grid-<target>': what this invocation regenerates."""
  if _GRID.value:
    return 'grid' if _named_target() is None else f'grid-{_named_target()}'
  return _named_target()


def _plan(output_dir: pathlib.Path) -> tuple[list[cells_lib.Cell], list[cells_lib.Cell]]:
  """(the cells to run, every cell of the target): the rows `--methods` names (all without it),
  every seed; for the grid, both are its cells."""
  seeds = _seeds()  # checked before the quick data is written
  if _QUICK.value:
    dataset_flags, extra = quick.write_dataset(output_dir / 'data'), quick.EXTRA_FLAGS
  else:
    dataset_flags = {'dataset': _DATASET.value}
    extra = tables.DATASET_MEMORY_FLAGS.get(_DATASET.value)  # e.g. GPFedRec's shards on ML-1M
  if _ROUNDS.value is not None:
    dataset_flags['rounds'] = _ROUNDS.value
  if _GRID.value:
    if not _METHODS.value:
      _fail('--grid needs --methods (algorithm names, e.g. fedmf,rqfedrec)')
    if _HYPERPARAMETERS.present:
      _fail('--hyperparameters does not apply to --grid, which sets the learning rate and weight decay '
            'of each cell itself (--learning_rates, --weight_decays)')
    grid = tables.grid_cells(_METHODS.value, dataset_flags=dataset_flags, seed=seeds[0], extra=extra,
                             learning_rates=_floats(_LEARNING_RATES), weight_decays=_floats(_WEIGHT_DECAYS),
                             target=_named_target())
    return grid, grid
  common = dict(dataset_flags=dataset_flags, seeds=seeds, extra=extra,
                hyperparameter_set=_HYPERPARAMETERS.value)
  every = tables.cells(_target(), **common)
  plan = tables.cells(_target(), methods=_METHODS.value, **common)
  if not plan:
    stems = [row.stem for row in tables.spec_of(_target())['rows']]
    _fail(f'--methods={",".join(_METHODS.value)} matches no row of {_target()}; rows: {stems}')
  return plan, every


def _record(cell: cells_lib.Cell, summary: dict, output_dir: pathlib.Path) -> dict:
  return tables.cell_record(cell, summary, seconds=cells_lib.wall_seconds(output_dir / cell.name))


def _run(plan, output_dir: pathlib.Path) -> tuple[list[dict], list[str]]:
  records, failures = [], []
  bar = tqdm.tqdm(plan, unit='cell', disable=not _PROGRESS.value)
  for cell in bar:
    bar.set_description(cell.name)
    cell_dir = output_dir / cell.name
    try:
      summary = cells_lib.finished_summary(cell, cell_dir)
      if summary is None and _REPORT_ONLY.value:
        continue
      if summary is None:
        summary = cells_lib.run_cell(cell, cell_dir, keep_program_state=_KEEP_PROGRAM_STATE.value)
    except cells_lib.CellError as e:
      failures.append(str(e))
      tqdm.tqdm.write(f'error: {e}', file=sys.stderr)
      continue
    records.append(_record(cell, summary, output_dir))
  return records, failures


def _other_finished_rows(plan, every, output_dir: pathlib.Path) -> list[dict]:
  """With `--methods`, the records of the target's other finished cells (of `every`, read, never
  run), so the table file keeps every finished row; rows whose folders hold runs with other flags
  are named on stderr and left out."""
  asked = {cell.name for cell in plan}
  records, other_flags = [], []
  for cell in every:
    if cell.name in asked:
      continue
    try:
      summary = cells_lib.finished_summary(cell, output_dir / cell.name)
    except cells_lib.CellError:
      other_flags.append(cell.name)
      continue
    if summary is not None:
      records.append(_record(cell, summary, output_dir))
  if other_flags:
    print(f'note: left out of {_target()}.md, their folders hold runs with other flags: '
          + ', '.join(other_flags), file=sys.stderr)
  return records


def _write(records: list[dict], output_dir: pathlib.Path, dataset: str) -> str:
  frame = pd.DataFrame(records)
  if _GRID.value:
    suffix = _target()[len('grid'):]  # '' or '-<target>'
    frame = cells_lib.merge_csv(frame, output_dir / f'grid{suffix}.csv')  # every row's grid run so far
    text, chosen = tables.choosing_markdown(frame)
    write_atomic(output_dir / f'choosing{suffix}.md', text)
    write_atomic(output_dir / f'chosen{suffix}.json', json.dumps(chosen, indent=2, sort_keys=True) + '\n')
    return text
  cells_lib.merge_csv(frame, output_dir / 'cells.csv')
  target = _target()
  spec = tables.spec_of(target)
  text = (tables.groups_markdown if 'groups' in spec else tables.markdown)(target, frame, dataset=dataset)
  title = f"{spec['title']}, {dataset}"
  if spec.get('figure') == 'heatmap':
    text += _similarity_figure(records, output_dir, title)
  write_atomic(output_dir / f'{target}.md', text)
  if spec.get('figure') == 'bars' or 'groups' in spec:
    metrics = figures.group_bar_metrics(spec['groups']) if 'groups' in spec else figures.BAR_METRICS
    figures.bars(frame, [row.label for row in spec['rows']], output_dir / f'{target}.png', title=title,
                 metrics=metrics)
  if spec.get('figure') == 'budget':
    figures.budget_curves(frame, output_dir / f'{target}.png', title=title, curves=spec['curves'])
  curves = {}
  for record in records:
    rounds_csv = output_dir / record['cell'] / 'rounds.csv'
    if rounds_csv.exists():
      curves.setdefault(record['row'], []).append(pd.read_csv(rounds_csv))
  if curves:
    figures.validation_curves(curves, output_dir / f'{target}-validation.png', title=title)
  return text


def _similarity_figure(records: list[dict], output_dir: pathlib.Path, title: str) -> str:
  """Figure 4 from the cells' similarity_change.csv: block means averaged over rounds and seeds."""
  matrices = {}
  for record in records:
    path = output_dir / record['cell'] / similarity_change.SIMILARITY_FILE
    if path.exists():
      blocks = [np.array(json.loads(cell)) for cell in pd.read_csv(path)['blocks']]
      matrices.setdefault(record['row'], []).append(np.mean(blocks, axis=0))
  if not matrices:
    return ''
  means = {row: np.mean(seeds, axis=0) for row, seeds in matrices.items()}
  figures.similarity_heatmaps(means, output_dir / 'figure4.png', title=title)
  return '\nMean |change of item-item cosine similarity| between rounds (all rounds, groups and seeds): ' + \
      ', '.join(f'{row} {np.mean(m):.5f}' for row, m in means.items()) + '.\n'


def _communication_table(output_dir: pathlib.Path) -> str:
  """Table 4 for the five datasets' sizes (`--quick`: 40 items, M = 4, d = 8, L = 2), no data read."""
  # Only Table 4 builds TFF computations in this process: every other target (and every refused
  # request) starts without importing TensorFlow.
  from tff_rqfed import execution
  from tff_rqfed.experiments import communication_table

  execution.set_execution_context()
  records = []
  for dataset, (num_items, codes) in tqdm.tqdm(communication_table.DATASETS.items(),
                                               disable=not _PROGRESS.value):
    size = dict(num_items=40, codes=4, dim=8, levels=2) if _QUICK.value else dict(
        num_items=num_items, codes=codes)
    records += communication_table.measure(dataset, **size)
  frame = pd.DataFrame(records)
  write_atomic(output_dir / 'table4.csv', frame.to_csv(index=False))
  text = communication_table.markdown(frame)
  write_atomic(output_dir / 'table4.md', text)
  return text


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]!r}')
  targets = sum([_TABLE.value is not None, _FIGURE.value is not None, _ANALYSIS.value is not None])
  if targets > 1 or targets == 0 and not _GRID.value:
    _fail('give exactly one of --table=N, --figure=N, --analysis=NAME or --grid (--grid may name one '
          'of the others: the grid over its rows)')
  if _TABLE.value is not None and _TABLE.value not in IMPLEMENTED_TABLES:
    _fail(f'--table={_TABLE.value} is not implemented; implemented tables: {IMPLEMENTED_TABLES}')
  if _FIGURE.value is not None and _FIGURE.value not in IMPLEMENTED_FIGURES:
    _fail(f'--figure={_FIGURE.value} is not implemented; implemented figures: {IMPLEMENTED_FIGURES}')
  name = 'quick' if _QUICK.value else _DATASET.value
  output_dir = pathlib.Path(_OUTPUT_DIR.value or f'results/experiments/{name}')
  if _TABLE.value == 4 and _GRID.value:
    _fail('--table=4 has no cells to choose hyperparameters for (its numbers come from the TFF types)')
  if _TABLE.value == 4:
    print(_communication_table(output_dir))
    return
  try:
    plan, every = _plan(output_dir)
  except ValueError as e:
    _fail(str(e))
  if _DRY_RUN.value:
    for cell in plan:
      try:
        done = cells_lib.finished_summary(cell, output_dir / cell.name) is not None
      except cells_lib.CellError as e:
        done = f'refused: {e}'
      print(f"{cell.name}\t{'finished' if done is True else done or 'to run'}\t"
            + ' '.join(cell.command(output_dir / cell.name)[3:-3]))
    return
  records, failures = _run(plan, output_dir)
  if records:
    records += _other_finished_rows(plan, every, output_dir)
  if records:
    print(_write(records, output_dir, name))
  if failures:
    print(f'{len(failures)} of {len(plan)} cells failed:\n  ' + '\n  '.join(failures), file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)

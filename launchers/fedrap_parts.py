r"""Which additive part of FedRAP's item table ranks: a finished or stopped run's saved state, scored by part.

  python -m launchers.fedrap_parts --output_dir=results/remedies/fedrap-per_user-s0-lambda0

FedRAP scores item i for user u with w_u . (D_k + C) + b_u: the client's private table D_k plus the
shared table C (`tff_rqfed.algorithms.fedrap`). This loads the last program state a
`launchers.simulate --algorithm=fedrap` run saved in DIR (every `--checkpoint_every` rounds, so not
necessarily its best round) and scores every user three ways, D + C, C alone and D alone
(`fedrap.part_scores`), on validation and test with both metric sets, beside the mean |value| of C
and of the clients' D (`fedrap.mean_magnitudes`). It is the measurement behind docs/RESULTS.md's
explanation of why FedRAP stays below MostPop.

Every other flag is read from DIR/flags.json, so the split, clients and process are the run's own
(`simulate.build_run`); flags that a later version no longer has are ignored. Nothing is trained.
Writes DIR/fedrap_parts.json and prints a Markdown table. The saved tables are memory-mapped, so
one user per client (943 tables D, 3.2 GB on ML-100k) needs about one client's table in memory.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags

from launchers import simulate
from tff_rqfed import execution
from tff_rqfed import results_io
from tff_rqfed import simulation
from tff_rqfed.algorithms import fedrap
from tff_rqfed.data import interactions

OUTPUT_FILE = 'fedrap_parts.json'


def restore_run_flags(output_dir: pathlib.Path) -> None:
  """Sets every launcher flag but --output_dir to the run's value in `output_dir`/flags.json."""
  path = output_dir / 'flags.json'
  try:
    values = json.loads(path.read_text())
  except FileNotFoundError:
    raise app.UsageError(f'{path}: not found; --output_dir must be a launchers.simulate output folder') from None
  except json.JSONDecodeError as e:
    raise app.UsageError(f'{path}: not JSON ({e})') from None
  if values.get('algorithm') != 'fedrap':
    raise app.UsageError(f"{path}: algorithm is {values.get('algorithm')!r}, not 'fedrap'")
  for name, value in values.items():
    if name != 'output_dir' and name in flags.FLAGS:
      flags.FLAGS[name].value = value


def evaluate_parts(parts: dict, split, *, k: int = 10) -> dict:
  """{part: {'valid'|'test': {'correct'|'paper': metrics}}} of `fedrap.part_scores`' output."""
  return {part: {on: simulation.evaluate_scores(scores, split, k=k, on=on)[0] for on in ('valid', 'test')}
          for part, scores in parts.items()}


def markdown(result: dict) -> str:
  """The parts' validation and test metrics (both sets) and the tables' magnitudes as Markdown."""
  header = ('| part | valid NDCG@10 | test Recall@10 | test NDCG@10 | paper-code test NDCG@10 '
            '| mean abs value |')
  lines = [f"Round {result['round']} of {result['output_dir']}:", '', header,
           '|' + '---|' * 6]
  magnitudes = result['mean_abs_value']
  for part, metrics in result['parts'].items():
    size = magnitudes.get(part)  # D + C has no single table
    lines.append(
        f"| {part} | {metrics['valid']['correct']['ndcg@10']:.4f} "
        f"| {metrics['test']['correct']['recall@10']:.4f} | {metrics['test']['correct']['ndcg@10']:.4f} "
        f"| {metrics['test']['paper']['ndcg@10']:.4f} | {'-' if size is None else f'{size:.4f}'} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  output_dir = pathlib.Path(flags.FLAGS.output_dir)
  execution.set_execution_context()  # the server's initial state runs a TFF computation; killed at exit
  try:
    restore_run_flags(output_dir)
    _, split, clients, process, _ = simulate.build_run()
    state, client_states, round_num = simulation.load_saved_state(
        output_dir, process, clients, keep_best_states=bool(flags.FLAGS.attack))
  except (app.UsageError, interactions.DataError, simulation.StateMismatchError,
          FileNotFoundError) as e:
    simulate.fail(e)
  parts = fedrap.part_scores(state, client_states, clients, split.num_users)
  result = {'output_dir': str(output_dir), 'round': round_num,
            'mean_abs_value': fedrap.mean_magnitudes(state, client_states),
            'parts': evaluate_parts(parts, split)}
  results_io.write_atomic(output_dir / OUTPUT_FILE, json.dumps(result, indent=2, default=float))
  print(markdown(result))


if __name__ == '__main__':
  app.run(main, flags_parser=simulate.parse_flags)

"""The simulation loop: rounds, validation, early stopping, test evaluation and results (Sec. 6.1).

`run_simulation` drives a `RecommenderProcess` over the clients of a protocol split. After every
`eval_every` rounds each user is ranked against all items with its own embedding (train items masked)
and the validation NDCG@10 (correct metric) decides early stopping: training stops after `patience`
rounds without improvement, counted from `min_rounds` on (RQFedRec's warm-up). The best round's state
is evaluated on the test set (train and validation items masked) with both the correct and the
paper-compatible metrics.

Results go to `output_dir`, each file written atomically: `rounds.csv` (one row per round, rewritten
after every round so an interrupted run keeps its history), `summary.json` and, with `save_topk`,
`topk.csv` (each test user's top-K in original ids, so anyone can recompute the metrics). Ctrl-C stops
training and still evaluates and writes the best state reached.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import time

import numpy as np
import pandas as pd
import tqdm

from tff_rqfed.evaluation import ranking
from tff_rqfed.results_io import write_atomic
from tff_rqfed.federated import process as process_lib


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
  rounds: int = 200
  patience: int = 10
  min_rounds: int = 0
  eval_every: int = 1
  seed: int = 0
  k: int = 10
  save_topk: bool = False
  progress: bool = True

  def __post_init__(self):
    for name in ('rounds', 'patience', 'eval_every', 'k'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)!r}')
    if self.min_rounds < 0:
      raise ValueError(f'min_rounds must be >= 0, got {self.min_rounds!r}')


def evaluate_scores(scores, split, *, k: int, on: str):
  """Both metric sets of `scores: float32[U, I]` on `on` ('valid' or 'test'), and the top-K."""
  if on == 'valid':
    truth_pairs, exclude = split.valid, (split.train,)
  elif on == 'test':
    truth_pairs, exclude = split.test, (split.train, split.valid)
  else:
    raise ValueError(f"on must be 'valid' or 'test', got {on!r}")
  top_k = ranking.top_k_from_scores(scores, exclude=exclude, k=k)
  truth = ranking.truth_lists(truth_pairs, num_users=split.num_users)
  return ranking.evaluate(top_k, truth, k=k), top_k


def run_simulation(
    process: process_lib.RecommenderProcess,
    *,
    split,
    clients,
    config: SimulationConfig,
    output_dir,
    item_ids=None,
    user_ids=None,
    extra_summary: dict | None = None,
) -> dict:
  """Trains `process` on `clients`, early-stops on validation, writes and returns the summary."""
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  ndcg_key = f'ndcg@{config.k}'
  state = process.initialize()
  client_states = process.initial_client_states(clients)
  best = {'ndcg': -1.0, 'round': 0, 'state': state, 'client_states': client_states}
  history = []
  round_seconds = []
  since_best = 0
  interrupted = False
  bar = tqdm.trange(1, config.rounds + 1, disable=not config.progress, desc=process.name)
  try:
    for round_num in bar:
      data = process_lib.client_data_values(clients, seed=config.seed, round_num=round_num)
      start = time.perf_counter()
      state, client_states, metrics = process.next(state, client_states, data, round_num=round_num)
      round_seconds.append(time.perf_counter() - start)
      row = {'round': round_num, 'seconds': round_seconds[-1], **metrics}
      if round_num % config.eval_every == 0 or round_num == config.rounds:
        scores = process.scores(state, client_states, clients, split.num_users)
        valid, _ = evaluate_scores(scores, split, k=config.k, on='valid')
        row.update({f'valid_{key}': value for key, value in valid['correct'].items()})
        row.update({f'valid_paper_{key}': value for key, value in valid['paper'].items()})
        if valid['correct'][ndcg_key] > best['ndcg']:
          best = {'ndcg': valid['correct'][ndcg_key], 'round': round_num,
                  'state': copy.deepcopy(state), 'client_states': copy.deepcopy(client_states)}
          since_best = 0
        elif round_num > config.min_rounds:
          # Patience counts only after min_rounds: RQFedRec's validation dips while lambda warms up.
          since_best += config.eval_every
        bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                        valid_ndcg=f"{valid['correct'][ndcg_key]:.4f}", best=best['round'])
      history.append(row)
      write_atomic(output_dir / 'rounds.csv', pd.DataFrame(history).to_csv(index=False))
      if since_best >= config.patience:  # since_best only grows after min_rounds
        break
  except KeyboardInterrupt:
    interrupted = True
  finally:
    bar.close()

  scores = process.scores(best['state'], best['client_states'], clients, split.num_users)
  test, top_k = evaluate_scores(scores, split, k=config.k, on='test')
  valid, _ = evaluate_scores(scores, split, k=config.k, on='valid')
  summary = {
      'algorithm': process.name,
      'test': test['correct'],
      'test_paper': test['paper'],
      'valid': valid['correct'],
      'valid_paper': valid['paper'],
      'best_round': best['round'],
      'rounds_run': len(history),
      'interrupted': interrupted,
      'seconds_per_round': float(np.mean(round_seconds)) if round_seconds else None,
      'communication': process.communication,
  }
  if extra_summary:
    summary.update(extra_summary)
  write_atomic(output_dir / 'summary.json', json.dumps(summary, indent=2, sort_keys=True) + '\n')
  if config.save_topk:
    test_users = np.unique(split.test[:, 0])
    rows = []
    for user in test_users:
      user_id = user_ids[user] if user_ids is not None else user
      items = [item_ids[i] if item_ids is not None else i for i in top_k[user]]
      rows.append({'user_id': user_id, **{f'item_{r + 1}': item for r, item in enumerate(items)}})
    write_atomic(output_dir / 'topk.csv', pd.DataFrame(rows).to_csv(index=False))
  return summary

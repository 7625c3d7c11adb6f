"""The simulation loop: rounds, validation, early stopping, test evaluation and results (Sec. 6.1).

`run_simulation` drives a `RecommenderProcess` over the clients of a protocol split. After every
`eval_every` rounds each user is ranked against all items with its own embedding (train items masked)
and the validation NDCG@10 (correct metric) decides early stopping: training stops after `patience`
rounds without improvement, counted from `min_rounds` on (the floor: `tff_rqfed.hyperparameters`). The best round's state
is evaluated on the test set (train and validation items masked) with both the correct and the
paper-compatible metrics, and with the correct metrics on the test items of each popularity third of
the training interactions (head, torso, tail: `evaluation.item_groups`).

Results go to `output_dir`, each file written atomically: `rounds.csv` (one row per round, released
after every round so an interrupted run keeps its history), `summary.json` and, with `save_topk`,
`topk.csv` (each test user's top-K in original ids, so anyone can recompute the metrics). Ctrl-C or
SIGTERM stops training after the round in flight and still evaluates and writes the best state
reached (`_StopRequests`).

Each round's metrics are released, keyed by the round number, through TFF's program release managers
(`metrics_release_manager`): `tff.program.CSVFileReleaseManager` writes `rounds.csv` (in write mode:
the file is rewritten to a temporary name and renamed, never left half written) and, with
`tensorboard`, `tff.program.TensorBoardReleaseManager` writes event files under `tensorboard/`.
Releasing round t drops the CSV's rows of rounds >= t, so a resumed run's `rounds.csv` loses the rounds
run after its last saved state and gains them again as they are rerun. TensorBoard event files are
appended to: after a resume, the rerun rounds appear twice there (same values).

The best round is kept as its scores of every user (`float32[U, I]`, what the test evaluation reads),
not as a copy of its states: with one user per client a copy of the client states is the size of the
whole private state again (FedRAP: 943 x float32[1682, 512], 3.2 GB), and so is one of GPFedRec's server
state (its per-client targets). A run whose `on_finish` needs the best round's server and client
states (the launcher's upload attack) asks for them with `keep_best_states`.

Every `checkpoint_every` rounds the loop's program state (server state, every client's private state,
the best round's state and scores, the early-stopping bookkeeping and the round history) is saved with TFF's
`tff.program.FileProgramStateManager` under `program_state/`, arrays of 1 MiB or more as `.npy` files
beside it (`program_state.ArrayFileProgramStateManager`: no tensor copies of GPFedRec's 3.2 GB of
per-client targets); `resume` continues from the latest one.
Rounds are deterministic in (seed, round), so a resumed run ends with the metrics of an uninterrupted
one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import tensorflow_federated as tff
import tqdm

from tff_rqfed.evaluation import item_groups
from tff_rqfed.evaluation import ranking
from tff_rqfed.evaluation import similarity_change
from tff_rqfed import program_state
from tff_rqfed.results_io import PROGRAM_STATE_DIR, write_atomic
from tff_rqfed.federated import process as process_lib

ROUNDS_FILE = 'rounds.csv'
SIMILARITY_FILE = similarity_change.SIMILARITY_FILE
TENSORBOARD_DIR = 'tensorboard'


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
  checkpoint_every: int = 5  # rounds between saved program states (0: never)
  resume: bool = False
  tensorboard: bool = False  # also release each round's metrics to TensorBoard event files
  client_fraction: float = 1.0  # share of the clients sampled to take part in each round
  track_similarity: bool = False  # Fig. 4: item-item similarity change per round (similarity_change.csv)
  client_shards: int = 1  # a round's clients in this many shards, each summed apart (federated.sharding)
  keep_best_states: bool = False  # copy the server and client states of the best round, for `on_finish`

  def __post_init__(self):
    if not 0.0 < self.client_fraction <= 1.0:
      raise ValueError(f'client_fraction must be in (0, 1], got {self.client_fraction!r}')
    for name in ('rounds', 'patience', 'eval_every', 'k', 'client_shards'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)!r}')
    if self.min_rounds < 0:
      raise ValueError(f'min_rounds must be >= 0, got {self.min_rounds!r}')
    if self.checkpoint_every < 0:
      raise ValueError(f'checkpoint_every must be >= 0, got {self.checkpoint_every!r}')


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


def test_item_group_metrics(top_k, split, *, k: int) -> dict:
  """The correct metrics on the test items of each popularity third (`evaluation.item_groups`) and,
  when the split holds cold items out (`data.cold_items`), on the cold and the other ('warm') items."""
  groups = item_groups.popularity_groups(split.train, split.num_items)
  if split.cold_items is not None:
    groups['cold'] = np.zeros(split.num_items, bool)
    groups['cold'][split.cold_items] = True
    groups['warm'] = ~groups['cold']
  return item_groups.group_metrics(top_k, split.test, groups, num_users=split.num_users, k=k)


@dataclasses.dataclass
class _Progress:
  """Everything the training loop carries from one round to the next: the saved program state."""

  state: object
  client_states: list
  best_scores: np.ndarray  # float32[U, I], every user's scores at the best round
  best_state: object = dataclasses.field(default_factory=list)  # [] unless kept (see the config)
  best_client_states: list = dataclasses.field(default_factory=list)  # [] unless kept
  best_ndcg: float = -1.0
  best_round: int = 0
  since_best: int = 0
  history: list = dataclasses.field(default_factory=list)

  def as_program_state(self) -> collections.OrderedDict:
    """A structure of arrays for `tff.program.FileProgramStateManager` (the history as JSON)."""
    return collections.OrderedDict(
        state=self.state, client_states=list(self.client_states), best_state=self.best_state,
        best_scores=self.best_scores, best_client_states=list(self.best_client_states),
        best_ndcg=np.float64(self.best_ndcg), best_round=np.int64(self.best_round),
        since_best=np.int64(self.since_best), history=json.dumps(self.history))

  @classmethod
  def from_program_state(cls, saved) -> '_Progress':
    history = saved['history']
    return cls(state=saved['state'], client_states=list(saved['client_states']),
               best_state=saved['best_state'], best_scores=np.asarray(saved['best_scores']),
               best_client_states=list(saved['best_client_states']),
               best_ndcg=float(saved['best_ndcg']), best_round=int(saved['best_round']),
               since_best=int(saved['since_best']),
               history=json.loads(history.decode() if isinstance(history, bytes) else history))


class StateMismatchError(ValueError):
  """A saved program state that this run's structure cannot load (`SimulationConfig.resume`)."""


class _Checkpoints:
  """Saves and loads the loop's program state with TFF's `FileProgramStateManager` (versions = rounds),
  large arrays beside it (`program_state.ArrayFileProgramStateManager`).

  The state of round t is saved as version t under `<output_dir>/program_state/` (the last two kept;
  each written to a temporary folder and renamed, so a kill never leaves a half-written version).
  """

  def __init__(self, output_dir: pathlib.Path, every: int, *, mmap_mode: str | None = None):
    self.every = every
    self.root = output_dir / PROGRAM_STATE_DIR
    self.manager = program_state.ArrayFileProgramStateManager(self.root, keep_total=2,
                                                              keep_first=False, mmap_mode=mmap_mode)

  def load_latest(self, initial: _Progress) -> tuple[_Progress, int]:
    try:
      saved, version = asyncio.run(self.manager.load_latest(initial.as_program_state()))
    except (TypeError, ValueError) as e:  # tf.nest: "don't have the same nested structure"
      raise StateMismatchError(
          f'{self.root} holds a program state of another structure than this run\'s (saved by an '
          f'earlier version of tff-rqfed, or with flags that change the state: {str(e).splitlines()[0]}); '
          'pass --overwrite to start the run again') from None
    except program_state.MissingArrayError as e:
      raise StateMismatchError(str(e)) from None
    return (initial, 0) if saved is None else (_Progress.from_program_state(saved), version)

  def clear(self) -> None:
    shutil.rmtree(self.root, ignore_errors=True)

  def maybe_save(self, progress: _Progress, round_num: int) -> None:
    if self.every and round_num % self.every == 0:
      asyncio.run(self.manager.save(progress.as_program_state(), round_num))


def metrics_release_manager(output_dir: pathlib.Path, *, tensorboard: bool = False
                            ) -> tff.program.ReleaseManager:
  """Where each round's metrics go: `rounds.csv` and, with `tensorboard`, TensorBoard event files."""
  managers = [tff.program.CSVFileReleaseManager(output_dir / ROUNDS_FILE,
                                                save_mode=tff.program.CSVSaveMode.WRITE,
                                                key_fieldname='round')]
  if tensorboard:
    managers.append(tff.program.TensorBoardReleaseManager(output_dir / TENSORBOARD_DIR))
  return tff.program.GroupingReleaseManager(managers)


PARTICIPATION_STREAM = 9  # the round's sample of clients is default_rng([seed, 9, round]) (cold items: 8)


def participants_per_round(num_clients: int, fraction: float) -> int:
  """How many clients take part in a round: all at fraction 1, else max(1, round(fraction x clients))."""
  if fraction >= 1.0:
    return num_clients
  return max(1, int(np.floor(fraction * num_clients + 0.5)))


def participants(num_clients: int, *, fraction: float, seed: int, round_num: int) -> np.ndarray:
  """Sorted indices of the clients taking part in round `round_num`: all of them at fraction 1, else
  `participants_per_round` drawn without replacement, deterministic in (seed, round)."""
  if fraction >= 1.0:
    return np.arange(num_clients)
  rng = np.random.default_rng([seed, PARTICIPATION_STREAM, round_num])
  return np.sort(rng.choice(num_clients, size=participants_per_round(num_clients, fraction),
                            replace=False))


class _SimilarityTracker:
  """Fig. 4 (Sec. 6.4.2): after each round, the G x G block means of |change of item-item cosine
  similarity| on the server's item table (`evaluation.similarity_change`), released with the round
  as key to `similarity_change.csv` (column `blocks`, a nested list) like the round's metrics; the
  round's mean over the blocks goes to rounds.csv as `item_similarity_change`. A resumed run starts
  from the table of its saved round, so its rows equal an uninterrupted run's."""

  GROUPS = 20

  def __init__(self, process, output_dir: pathlib.Path, *, seed: int, resume: bool):
    if getattr(process, 'item_embeddings', None) is None:
      raise ValueError(f'track_similarity: {process.name} has no item table the server can form')
    if not resume:
      (output_dir / SIMILARITY_FILE).unlink(missing_ok=True)
    self.process, self.seed = process, seed
    self.manager = tff.program.CSVFileReleaseManager(
        output_dir / SIMILARITY_FILE, save_mode=tff.program.CSVSaveMode.WRITE, key_fieldname='round')
    self.previous_cosine = self.groups = None

  def start(self, state) -> None:
    table = self.process.item_embeddings(state)
    self.previous_cosine = similarity_change.cosine_similarity(table)
    self.groups = similarity_change.random_item_groups(
        len(table), groups=min(self.GROUPS, len(table)), seed=self.seed)

  def update(self, state, round_num: int) -> float:
    """Releases round `round_num`'s blocks against the previous round (whose cosines it kept)."""
    current = similarity_change.cosine_similarity(self.process.item_embeddings(state))
    blocks = similarity_change.block_means(np.abs(current - self.previous_cosine), self.groups)
    self.previous_cosine = current
    asyncio.run(self.manager.release({'blocks': blocks}, key=round_num))
    return float(blocks.mean())


def _train_round(process, progress: _Progress, clients, split, config, round_num: int,
                 workers=None) -> dict:
  """Runs round `round_num`, validates when due, updates `progress`; returns the rounds.csv row.

  Only the round's participants (`participants`) train and upload; the others keep their private state.
  The round runs over `config.client_shards` shards on `workers` (`execution.Workers`, None: this
  process's context).
  """
  taking_part = participants(len(clients), fraction=config.client_fraction, seed=config.seed,
                             round_num=round_num)
  data = process_lib.client_data_values([clients[i] for i in taking_part], seed=config.seed,
                                        round_num=round_num, excluded_items=split.cold_items,
                                        client_indices=taking_part)
  start = time.perf_counter()
  progress.state, updated, metrics = process.next(
      progress.state, [progress.client_states[i] for i in taking_part], data, round_num=round_num,
      shards=config.client_shards, workers=workers)
  client_states = list(progress.client_states)
  for i, client_state in zip(taking_part, updated):
    client_states[i] = client_state
  progress.client_states = client_states
  row = {'round': round_num, 'seconds': time.perf_counter() - start, **metrics}
  if round_num % config.eval_every == 0 or round_num == config.rounds:
    scores = process.scores(progress.state, progress.client_states, clients, split.num_users)
    valid, _ = evaluate_scores(scores, split, k=config.k, on='valid')
    row.update({f'valid_{key}': value for key, value in valid['correct'].items()})
    row.update({f'valid_paper_{key}': value for key, value in valid['paper'].items()})
    ndcg = valid['correct'][f'ndcg@{config.k}']
    if ndcg > progress.best_ndcg:
      progress.best_ndcg, progress.best_round, progress.since_best = ndcg, round_num, 0
      progress.best_scores = np.asarray(scores, np.float32)
      if config.keep_best_states:
        progress.best_state = copy.deepcopy(progress.state)
        progress.best_client_states = copy.deepcopy(progress.client_states)
    elif round_num > config.min_rounds:
      # Patience counts only after min_rounds: RQFedRec's validation dips while lambda warms up.
      progress.since_best += config.eval_every
  progress.history.append(row)
  return row


def _initial_progress(process, clients, split, *, keep_best_states: bool, score: bool) -> _Progress:
  """Round 0: the initial states, also the best so far. Only `_Progress` refers to the states, so each
  round's replaced states are freed (one user per client: 3.2 GB for FedRAP on ML-100k). Without
  `score` the best scores are zeros of their shape: a resumed run loads its own."""
  state, client_states = process.initialize(), process.initial_client_states(clients)
  if score:
    scores = np.asarray(process.scores(state, client_states, clients, split.num_users), np.float32)
  else:
    scores = np.zeros((split.num_users, split.num_items), np.float32)
  return _Progress(
      state=state, client_states=client_states, best_scores=scores,
      best_state=state if keep_best_states else [],
      best_client_states=client_states if keep_best_states else [])


def load_saved_state(output_dir, process: process_lib.RecommenderProcess, clients, *,
                     keep_best_states: bool = False):
  """(state, client_states, round_num) of the last program state a run saved in `output_dir`.

  For looking into a run's private state after the fact (`launchers.fedrap_parts`); nothing is
  trained. The large arrays are memory-mapped read-only, so a reader that takes one client at a time
  never holds them all (FedRAP's 943 tables D are 3.2 GB with one user per client). The saved
  structure is that of `process` on `clients`, every client state shaped like the first client's
  initial state; `keep_best_states` is the run's `--attack` (it also saved the best round's states).

  Raises:
    FileNotFoundError: nothing is saved in `output_dir`.
    StateMismatchError: what is saved is not the structure of `process` on `clients`.
  """
  output_dir = pathlib.Path(output_dir)
  checkpoints = _Checkpoints(output_dir, every=0, mmap_mode='r')
  state = process.initialize()
  one_client = process.initial_client_states(clients[:1])[0]
  structure = _Progress(
      state=state, client_states=[one_client] * len(clients), best_scores=np.zeros((0, 0), np.float32),
      best_state=state if keep_best_states else [],
      best_client_states=[one_client] * len(clients) if keep_best_states else [])
  progress, version = checkpoints.load_latest(structure)
  if not version:
    raise FileNotFoundError(f'{checkpoints.root}: no saved program state (the run saves one every '
                            '--checkpoint_every rounds)')
  return progress.state, progress.client_states, version


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
    on_finish=None,
    workers=None,
) -> dict:
  """Trains `process` on `clients`, early-stops on validation, writes and returns the summary.

  `on_finish(summary, best_state, best_client_states) -> dict`, if given, adds its entries to the
  summary before it is written (the launcher's privacy accounting and attack); `best_state` and
  `best_client_states` are `[]` unless `config.keep_best_states`.

  With `config.resume`, training continues from the last program state saved in `output_dir` (every
  `config.checkpoint_every` rounds); the result is that of an uninterrupted run.

  `workers` (`execution.Workers`) run the rounds' client shards; the results depend on
  `config.client_shards`, not on the workers.
  """
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  checkpoints = _Checkpoints(output_dir, config.checkpoint_every)
  progress = _initial_progress(process, clients, split, keep_best_states=config.keep_best_states,
                              score=not config.resume)
  resumed_from = 0
  if config.resume:
    progress, resumed_from = checkpoints.load_latest(progress)
    if not resumed_from:  # nothing saved yet: round 0 is the best so far
      progress.best_scores = np.asarray(
          process.scores(progress.state, progress.client_states, clients, split.num_users), np.float32)
  else:
    checkpoints.clear()  # a previous run's states of the same folder (--overwrite or a rerun)
    (output_dir / ROUNDS_FILE).unlink(missing_ok=True)
  metrics_manager = metrics_release_manager(output_dir, tensorboard=config.tensorboard)
  tracker = None
  if config.track_similarity:
    tracker = _SimilarityTracker(process, output_dir, seed=config.seed, resume=config.resume)
    tracker.start(progress.state)
  interrupted = False
  bar = tqdm.trange(resumed_from + 1, config.rounds + 1, disable=not config.progress, desc=process.name)
  with _StopRequests() as stop:
    try:
      for round_num in bar:
        # since_best only grows after min_rounds
        if stop.requested or progress.since_best >= config.patience:
          break
        try:
          row = _train_round(process, progress, clients, split, config, round_num, workers)
        except Exception:  # pylint: disable=broad-except
          if not stop.requested:
            raise
          break  # e.g. Ctrl-C in a terminal also stops the TFF worker: the round is abandoned
        if tracker is not None:
          row['item_similarity_change'] = tracker.update(progress.state, round_num)
        metrics = {name: value for name, value in row.items() if name != 'round'}
        asyncio.run(metrics_manager.release(metrics, key=round_num))
        checkpoints.maybe_save(progress, round_num)
        if f'valid_ndcg@{config.k}' in row:
          bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}",
                          valid_ndcg=f"{row[f'valid_ndcg@{config.k}']:.4f}", best=progress.best_round)
    except KeyboardInterrupt:  # raised by the process itself, or off the main thread
      interrupted = True
    finally:
      bar.close()
    return _finish(process, progress, clients, split, config, output_dir,
                   interrupted=interrupted, stop=stop, resumed_from=resumed_from,
                   extra_summary=extra_summary, on_finish=on_finish, item_ids=item_ids,
                   user_ids=user_ids)


class _StopRequests(contextlib.AbstractContextManager):
  """Inside the block, SIGINT and SIGTERM only request a stop (`requested`); the loop checks it
  between rounds, so the round in flight ends (or, if it fails after the request, is abandoned) and
  the best state's evaluation and summary are written whole, whatever signals follow.

  The handler `execution.set_execution_context` installs raises an exception wherever the main
  thread is; raised inside a round (in TFF's, TensorFlow's or gRPC's Python code), that exception
  once left a fresh-clone CI run's launcher hung for 120 s after SIGTERM; where exactly was not
  found, but an exception between two statements of library code can leave a lock held. Here
  nothing is raised.
  The first request is reported on stderr (`os.write`, safe in a handler). A stop takes up to one
  round (205 s for FedCIA on ML-100k); SIGKILL stops at once, and `--resume` continues from the last
  saved round. Off the main thread, where Python cannot install handlers, nothing changes.
  """

  def __init__(self):
    self.signals = []
    self._previous = {}

  @property
  def requested(self) -> bool:
    return bool(self.signals)

  def _note(self, signum, frame):
    del frame
    if not self.signals:
      os.write(2, f'\n{signal.Signals(signum).name}: stopping after this round; the best round is '
                  'evaluated and written (SIGKILL stops at once)\n'.encode())
    self.signals.append(signum)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._note)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return None


def _finish(process, progress, clients, split, config, output_dir, *, interrupted: bool,
            stop: _StopRequests, resumed_from, extra_summary, on_finish, item_ids,
            user_ids) -> dict:
  """Evaluates the best state on test and validation and writes `summary.json` (and `topk.csv`).
  The summary says `interrupted` when a KeyboardInterrupt stopped training (`interrupted`) or a stop
  was requested (`stop`) before the summary was written."""
  test, top_k = evaluate_scores(progress.best_scores, split, k=config.k, on='test')
  valid, _ = evaluate_scores(progress.best_scores, split, k=config.k, on='valid')
  seconds = [row['seconds'] for row in progress.history]
  summary = {
      'algorithm': process.name,
      'test': test['correct'],
      'test_paper': test['paper'],
      'test_item_groups': test_item_group_metrics(top_k, split, k=config.k),
      'valid': valid['correct'],
      'valid_paper': valid['paper'],
      'best_round': progress.best_round,
      'rounds_run': len(progress.history),
      'resumed_from_round': resumed_from,
      'seconds_per_round': float(np.mean(seconds)) if seconds else None,
      'communication': process.communication,
  }
  if extra_summary:
    summary.update(extra_summary)
  if on_finish is not None:
    summary.update(on_finish(summary, progress.best_state, progress.best_client_states))
  summary['interrupted'] = interrupted or stop.requested
  write_atomic(output_dir / 'summary.json', json.dumps(summary, indent=2, sort_keys=True) + '\n')
  if config.save_topk:
    _write_topk(output_dir, split, top_k, item_ids=item_ids, user_ids=user_ids)
  return summary


def _write_topk(output_dir: pathlib.Path, split, top_k, *, item_ids, user_ids) -> None:
  """topk.csv: each test user's top-K in original ids."""
  rows = []
  for user in np.unique(split.test[:, 0]):
    user_id = user_ids[user] if user_ids is not None else user
    items = [item_ids[i] if item_ids is not None else i for i in top_k[user]]
    rows.append({'user_id': user_id, **{f'item_{r + 1}': item for r, item in enumerate(items)}})
  write_atomic(output_dir / 'topk.csv', pd.DataFrame(rows).to_csv(index=False))

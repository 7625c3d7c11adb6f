"""Cells of an experiment sweep: one `launchers.simulate` run each, skipped once finished.

A cell is a name (its folder under the sweep's output folder, e.g. `fedmf-s0` or
`per_user/rqfedrec-s1`) and the `launchers.simulate` flags that define it. `run_cell` runs the cell as
a subprocess of the same launcher a user would call (so a cell is exactly a `launchers.simulate` run,
and a FedCIA cell's 8 GB TFF worker is gone when the cell ends), with its log in `<cell>/log.txt`.

A cell is *finished* when its folder holds a `summary.json` of an uninterrupted run whose
`flags.json` agrees with the cell's flags; a finished cell is read, never run again, so a killed sweep
resumes at the first unfinished cell. A folder whose `flags.json` disagrees holds another experiment:
it is refused with the first differing flag named, never overwritten. The early-stop floor
(`min_rounds`) is the exception: a finished run whose stop the requested floor would not have moved
is the requested run (`same_stopping`), so runs made before the validated floor are still read.
A folder without a summary (a cell killed mid-run) continues from its last saved round
(`launchers.simulate --resume`, TFF's `FileProgramStateManager`); runs are deterministic, so the
result is the one the killed run would have given.

A killed runner does not leave its cell running: the cell's process gets SIGTERM when the runner
dies (Linux `PR_SET_PDEATHSIG`), which makes it save an interrupted summary and stop its TFF worker.
Two runners never run one cell at once: `run_cell` holds an exclusive lock on `<cell>/cell.lock`
(`fcntl.flock`), passed on to the cell's process, so it lasts until that process has exited; a second
runner asking for the cell gets a `CellError` instead of a second writer in the folder.

A finished cell's saved program states are removed (unless `keep_program_state`): they only serve
`--resume`, which a finished cell never needs, and at d = 512 they are about 0.5 GB a cell for
GPFedRec and up to 1.4 GB for FedCIA, so the paper's sweeps would otherwise fill a disk.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

from tff_rqfed import hyperparameters
from tff_rqfed.results_io import PROGRAM_STATE_DIR, write_atomic

REPO = pathlib.Path(__file__).resolve().parents[2]
RUNNER_FILE = 'runner.json'  # wall time and exit status of the cell, written by `run_cell`
LOCK_FILE = 'cell.lock'  # held while a runner runs the cell (see module doc)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class CellError(RuntimeError):
  """A cell cannot be run or read: its message names the cell folder and the reason."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of a sweep.

  Attributes:
    name: the folder under the sweep's output folder, `/`-separated (`per_user/fedmf-s0`).
    flags: `launchers.simulate` flags (without `--output_dir`), name -> value.
    row: the table row this cell belongs to (`FedMF`), shared by the seeds of one method.
  """

  name: str
  flags: tuple[tuple[str, object], ...]
  row: str

  @classmethod
  def make(cls, name: str, row: str, **flags) -> 'Cell':
    return cls(name=name, row=row, flags=tuple(sorted(flags.items())))

  @property
  def flag_dict(self) -> dict[str, object]:
    return dict(self.flags)

  def command(self, output_dir: pathlib.Path) -> list[str]:
    args = [f'--{name}={_flag_text(value)}' for name, value in self.flags]
    return [sys.executable, '-m', 'launchers.simulate', *args,
            f'--output_dir={output_dir}', '--progress=false', '--resume']


def _flag_text(value) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (list, tuple)):
    return ','.join(str(v) for v in value)
  return str(value)


def _same(requested, recorded) -> bool:
  """Whether a requested flag value equals the value `flags.json` recorded (absl parsed it)."""
  if isinstance(recorded, list):
    return [str(v) for v in recorded] == _flag_text(requested).split(',')
  if isinstance(recorded, bool) or isinstance(requested, bool):
    return _flag_text(requested) == _flag_text(recorded)
  if isinstance(recorded, (int, float)):
    try:
      return float(requested) == float(recorded)
    except (TypeError, ValueError):
      return False
  return str(requested) == str(recorded)


def recorded_min_rounds(recorded: dict) -> int:
  """The early-stop floor of a run from its `flags.json`. Runs before the validated floor
  (`hyperparameters.DEFAULT_MIN_ROUNDS`) recorded `min_rounds: null`, which meant the `pre_grid`
  floor: T_warm + tau for RQFedRec and 0 for every other algorithm."""
  if recorded.get('min_rounds') is not None:
    return int(recorded['min_rounds'])
  return hyperparameters.early_stop_floor(
      recorded.get('algorithm'), warmup_rounds=int(recorded.get('warmup_rounds', 0)),
      refresh_every=int(recorded.get('refresh_every', 0)), hyperparameter_set='pre_grid')


def same_stopping(requested_min_rounds: int, recorded: dict, summary: dict) -> bool:
  """Whether the finished run of `summary` is also the run with floor `requested_min_rounds`.

  The floor never changes training, only the round a run stops at: patience counts the rounds after
  the best round that are also after the floor. A higher floor never stops a run earlier, and stops it
  at the same round when the recorded best round is at or after that floor (or when the run was never
  stopped early: it ran all --rounds). A lower floor could have stopped it earlier: another run.
  """
  floor = recorded_min_rounds(recorded)
  if requested_min_rounds == floor:
    return True
  if requested_min_rounds < floor or summary.get('interrupted'):
    return False
  return (summary['best_round'] >= requested_min_rounds
          or summary['rounds_run'] >= int(recorded['rounds']))


def _differing_flag(cell: Cell, recorded: dict, summary: dict) -> tuple[str, str] | None:
  """(name, description) of the first of the cell's flags that `recorded` lacks or differs in; a
  different early-stop floor that gives the same stop (`same_stopping`) does not differ."""
  for name, value in cell.flags:
    if name == 'min_rounds':
      if not same_stopping(int(value), recorded, summary):
        return name, (f'--min_rounds={value} requested, {recorded_min_rounds(recorded)} recorded, which '
                      f'may move the stop of that run (round {summary.get("rounds_run")}, best round '
                      f'{summary.get("best_round")})')
    elif name not in recorded or not _same(value, recorded[name]):
      return name, f'--{name}={_flag_text(value)} requested, {recorded.get(name, "absent")!r} recorded'
  return None


def finished_summary(cell: Cell, cell_dir: pathlib.Path) -> dict | None:
  """The cell's summary when `cell_dir` holds a finished run of it, else None (see module doc)."""
  summary_path = cell_dir / 'summary.json'
  flags_path = cell_dir / 'flags.json'
  if not summary_path.exists():
    return None
  try:
    summary = json.loads(summary_path.read_text())
    recorded = json.loads(flags_path.read_text())
  except (OSError, ValueError) as e:
    raise CellError(f'{cell_dir}: unreadable summary.json or flags.json ({e}); move the folder away') from e
  differing = _differing_flag(cell, recorded, summary)
  if differing:
    name, description = differing
    hint = ('; the runner takes learning rates, weight decays and early-stop floors from '
            '--hyperparameters (validated or pre_grid)'
            if name in ('learning_rate', 'weight_decay', 'min_rounds') else '')
    raise CellError(f'{cell_dir} holds a different run ({description}); move it or choose another '
                    f'--output_dir{hint}')
  return None if summary.get('interrupted') else summary


def _lock(cell: Cell, cell_dir: pathlib.Path) -> int:
  """An open descriptor holding the cell's exclusive lock; CellError if another process holds it."""
  fd = os.open(cell_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise CellError(f'cell {cell.name} is being run by another process ({cell_dir / LOCK_FILE} is '
                    'locked); wait for it or stop it') from None
  return fd


def _terminate_with_parent() -> None:
  """In the cell's process before exec: SIGTERM when the runner dies (no-op off Linux)."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  except (OSError, AttributeError):
    pass


def run_cell(cell: Cell, cell_dir: pathlib.Path, *, env: dict | None = None,
             keep_program_state: bool = False) -> dict:
  """Runs the cell's `launchers.simulate` into `cell_dir` and returns its summary.

  The log goes to `<cell>/log.txt`, appended to, so a resumed cell keeps the log of its killed part.
  Once the cell has finished, its `program_state/` is removed unless `keep_program_state`; a cell that
  failed or was killed keeps it, to resume from.
  """
  cell_dir.mkdir(parents=True, exist_ok=True)
  lock_fd = _lock(cell, cell_dir)
  try:
    start = time.perf_counter()
    with open(cell_dir / 'log.txt', 'a') as log:
      log.write(f'--- {time.strftime("%Y-%m-%d %H:%M:%S")} {" ".join(cell.command(cell_dir))}\n')
      log.flush()
      proc = subprocess.run(cell.command(cell_dir), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {})),
                            pass_fds=(lock_fd,), preexec_fn=_terminate_with_parent)
    seconds = time.perf_counter() - start
  finally:
    os.close(lock_fd)
  write_atomic(cell_dir / RUNNER_FILE, json.dumps(
      {'seconds': seconds, 'returncode': proc.returncode, 'command': cell.command(cell_dir)},
      indent=2) + '\n')
  if proc.returncode != 0:
    raise CellError(f'cell {cell.name} {_failure(proc.returncode)}; see {cell_dir / "log.txt"}')
  summary = finished_summary(cell, cell_dir)
  if summary is None:
    raise CellError(f'cell {cell.name} ended without a finished summary; see {cell_dir / "log.txt"}')
  if not keep_program_state:
    shutil.rmtree(cell_dir / PROGRAM_STATE_DIR, ignore_errors=True)
  return summary


def _failure(returncode: int) -> str:
  """How a cell's process ended, for `CellError`: an exit status, or the signal that killed it."""
  if returncode >= 0:
    return f'failed (exit {returncode})'
  try:
    name = signal.Signals(-returncode).name
  except ValueError:
    name = f'signal {-returncode}'
  cause = (' (the kernel\'s out-of-memory killer, or kill -9: check `dmesg` and the memory other '
           'runs hold)' if -returncode == signal.SIGKILL else '')
  return (f'was killed by {name}{cause}; a rerun resumes it from its last saved round '
          f'(exit {returncode})')


def wall_seconds(cell_dir: pathlib.Path) -> float | None:
  """The wall time `run_cell` recorded for the cell, or None for a run made outside the runner."""
  try:
    return float(json.loads((cell_dir / RUNNER_FILE).read_text())['seconds'])
  except (OSError, ValueError, KeyError):
    return None


def merge_csv(frame: pd.DataFrame, path: pathlib.Path) -> pd.DataFrame:
  """Adds the cell lines of `frame` to the sweep CSV at `path` (cells.csv, grid.csv): one line per
  cell, the newest kept; returns the merge.

  A line whose cell folder (beside the CSV) no longer holds a summary.json is dropped: a folder moved
  away or deleted takes its results with it, so the tables show only results that can be checked.
  Runners on the same sweep folder at once (two tables, say) merge one after another: the read, merge
  and write hold an exclusive lock on `<path>.lock`, so neither loses the other's lines.
  """
  with open(path.with_name(path.name + '.lock'), 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if path.exists():
      frame = pd.concat([pd.read_csv(path), frame]).drop_duplicates('cell', keep='last')
    frame = frame[[(path.parent / cell / 'summary.json').exists() for cell in frame['cell']]]
    frame = frame.sort_values('cell').reset_index(drop=True)
    write_atomic(path, frame.to_csv(index=False))
  return frame

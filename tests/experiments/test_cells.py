"""A cell is finished only when its folder holds an uninterrupted run with the same flags."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys

import pytest

from tff_rqfed.experiments import cells


def _write_run(folder, flags, **summary):
  folder.mkdir(parents=True)
  (folder / 'flags.json').write_text(json.dumps(flags))
  (folder / 'summary.json').write_text(json.dumps({'interrupted': False, **summary}))


def test_cell_command_is_the_simulate_launcher_with_its_flags_and_folder(tmp_path):
  cell = cells.Cell.make('fedmf-s0', 'FedMF', algorithm='fedmf', seed=0, save_topk=True,
                         ncf_hidden_units=(8, 4))
  command = cell.command(tmp_path / 'fedmf-s0')
  assert command[:3] == [sys.executable, '-m', 'launchers.simulate']
  assert '--algorithm=fedmf' in command and '--seed=0' in command
  assert '--save_topk=true' in command and '--ncf_hidden_units=8,4' in command
  assert f'--output_dir={tmp_path / "fedmf-s0"}' in command
  assert '--resume' in command  # a cell killed mid-run continues from its last saved round


def test_missing_folder_is_unfinished(tmp_path):
  cell = cells.Cell.make('fedmf-s0', 'FedMF', algorithm='fedmf')
  assert cells.finished_summary(cell, tmp_path / 'fedmf-s0') is None


def test_folder_killed_before_its_summary_is_unfinished(tmp_path):
  cell = cells.Cell.make('fedmf-s0', 'FedMF', algorithm='fedmf')
  (tmp_path / 'fedmf-s0').mkdir()
  (tmp_path / 'fedmf-s0' / 'flags.json').write_text(json.dumps({'algorithm': 'fedmf'}))
  (tmp_path / 'fedmf-s0' / 'rounds.csv').write_text('round\n1\n')
  assert cells.finished_summary(cell, tmp_path / 'fedmf-s0') is None


def test_finished_run_with_the_recorded_flags_is_read_not_rerun(tmp_path):
  # flags.json records absl's parsed values: floats, lists of strings, booleans.
  _write_run(tmp_path / 'c', {'algorithm': 'fedncf', 'learning_rate': 0.001, 'weight_decay': 0.0,
                              'ncf_hidden_units': ['8', '4'], 'save_topk': False, 'seed': 1},
             test={'ndcg@10': 0.5})
  cell = cells.Cell.make('c', 'FedNCF', algorithm='fedncf', learning_rate=1e-3, weight_decay=0,
                         ncf_hidden_units='8,4', save_topk=False, seed=1)
  assert cells.finished_summary(cell, tmp_path / 'c')['test'] == {'ndcg@10': 0.5}


def test_interrupted_run_is_unfinished(tmp_path):
  _write_run(tmp_path / 'c', {'algorithm': 'fedmf'}, interrupted=True)
  assert cells.finished_summary(cells.Cell.make('c', 'FedMF', algorithm='fedmf'), tmp_path / 'c') is None


@pytest.mark.parametrize('recorded', [{'algorithm': 'fedmf', 'learning_rate': 0.01},
                                      {'algorithm': 'fedmf'}])
def test_folder_of_another_run_is_refused_naming_the_flag(tmp_path, recorded):
  _write_run(tmp_path / 'c', recorded)
  cell = cells.Cell.make('c', 'FedMF', algorithm='fedmf', learning_rate=0.001)
  with pytest.raises(cells.CellError, match=r'different run \(--learning_rate=0.001 requested'):
    cells.finished_summary(cell, tmp_path / 'c')


# A run made before the validated floor recorded `min_rounds: null` (0, or T_warm + tau for RQFedRec).
_FEDMF_BEFORE_FLOOR = {'algorithm': 'fedmf', 'min_rounds': None, 'rounds': 300}


@pytest.mark.parametrize('best_round, rounds_run', [(217, 227), (30, 40), (12, 300)])
def test_a_run_whose_stop_the_higher_floor_would_not_move_is_read(tmp_path, best_round, rounds_run):
  # Best at or after the floor: patience counted the same rounds; or it never stopped early.
  _write_run(tmp_path / 'c', _FEDMF_BEFORE_FLOOR, best_round=best_round, rounds_run=rounds_run)
  cell = cells.Cell.make('c', 'FedMF', algorithm='fedmf', min_rounds=30)
  assert cells.finished_summary(cell, tmp_path / 'c')['best_round'] == best_round


def test_a_run_that_stopped_before_the_requested_floor_is_another_run(tmp_path):
  # Table 7's FedMF noise-0.05 cell: best round 6, stopped at 16; the floor of 30 trains it on.
  _write_run(tmp_path / 'c', _FEDMF_BEFORE_FLOOR, best_round=6, rounds_run=16)
  cell = cells.Cell.make('c', 'FedMF', algorithm='fedmf', min_rounds=30)
  message = (r'--min_rounds=30 requested, 0 recorded, .*round 16, best round 6\)'
             r'.*from --hyperparameters \(validated or pre_grid\)$')
  with pytest.raises(cells.CellError, match=message):
    cells.finished_summary(cell, tmp_path / 'c')


def test_a_lower_floor_than_recorded_is_another_run_even_with_a_late_best_round(tmp_path):
  # Patience counting from round 0 could have stopped it during an early plateau.
  _write_run(tmp_path / 'c', {'algorithm': 'fedmf', 'min_rounds': 30, 'rounds': 300}, best_round=217,
             rounds_run=227)
  with pytest.raises(cells.CellError, match='--min_rounds=0 requested, 30 recorded'):
    cells.finished_summary(cells.Cell.make('c', 'FedMF', algorithm='fedmf', min_rounds=0), tmp_path / 'c')
  assert cells.finished_summary(cells.Cell.make('c', 'FedMF', algorithm='fedmf', min_rounds=30),
                                tmp_path / 'c') is not None


def test_rqfedrec_runs_before_the_floor_recorded_warmup_plus_refresh_every():
  recorded = {'algorithm': 'rqfedrec', 'min_rounds': None, 'warmup_rounds': 20, 'refresh_every': 10}
  assert cells.recorded_min_rounds(recorded) == 30
  assert cells.recorded_min_rounds({'algorithm': 'fedmf', 'min_rounds': 30}) == 30


def test_unreadable_summary_is_refused_naming_the_folder(tmp_path):
  (tmp_path / 'c').mkdir()
  (tmp_path / 'c' / 'summary.json').write_text('{"test": ')
  (tmp_path / 'c' / 'flags.json').write_text('{}')
  with pytest.raises(cells.CellError, match=f'{tmp_path / "c"}: unreadable'):
    cells.finished_summary(cells.Cell.make('c', 'FedMF', algorithm='fedmf'), tmp_path / 'c')


def test_failing_cell_raises_with_its_log_and_records_the_exit_status(tmp_path):
  cell = cells.Cell.make('bad', 'FedMF', algorithm='no_such_algorithm')
  with pytest.raises(cells.CellError, match=r'cell bad failed \(exit [1-9]\d*\); see .*bad/log.txt'):
    cells.run_cell(cell, tmp_path / 'bad')
  assert 'no_such_algorithm' in (tmp_path / 'bad' / 'log.txt').read_text()
  assert json.loads((tmp_path / 'bad' / 'runner.json').read_text())['returncode'] != 0
  assert cells.wall_seconds(tmp_path / 'bad') > 0
  assert cells.wall_seconds(tmp_path / 'missing') is None


class _SelfKillingCell(cells.Cell):
  """A cell whose process kills itself with SIGKILL, as the out-of-memory killer does."""

  def command(self, output_dir):
    return [sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)']


def test_a_cell_killed_by_a_signal_is_reported_by_the_signals_name_and_how_to_resume(tmp_path):
  cell = _SelfKillingCell(name='killed', row='FedMF', flags=(('algorithm', 'fedmf'),))
  with pytest.raises(cells.CellError) as raised:
    cells.run_cell(cell, tmp_path / 'killed')
  message = str(raised.value)
  assert message.startswith('cell killed was killed by SIGKILL (the kernel\'s out-of-memory killer')
  assert 'a rerun resumes it from its last saved round (exit -9); see ' in message
  assert json.loads((tmp_path / 'killed' / 'runner.json').read_text())['returncode'] == -9


@dataclasses.dataclass(frozen=True)
class _FinishingCell(cells.Cell):
  """A cell whose process saves a program state and then writes a finished run of its flags, or
  exits with status 3 after the save when `fail`."""

  fail: bool = False

  def command(self, output_dir):
    script = (f'import json, pathlib, sys; out = pathlib.Path({str(output_dir)!r}); '
              f'(out / {cells.PROGRAM_STATE_DIR!r} / "arrays_5").mkdir(parents=True); '
              f'(out / {cells.PROGRAM_STATE_DIR!r} / "arrays_5" / "a.npy").write_bytes(b"x" * 1000); '
              f'{self.fail} and sys.exit(3); '
              f'(out / "flags.json").write_text(json.dumps({dict(self.flags)!r})); '
              f'(out / "summary.json").write_text(json.dumps({{"interrupted": False, "best_round": 5}}))')
    return [sys.executable, '-c', script]


def test_a_finished_cell_drops_its_program_state_which_only_resume_reads(tmp_path):
  cell = _FinishingCell(name='fedmf-s0', row='FedMF', flags=(('algorithm', 'fedmf'),))
  assert cells.run_cell(cell, tmp_path / 'fedmf-s0')['best_round'] == 5
  assert not (tmp_path / 'fedmf-s0' / cells.PROGRAM_STATE_DIR).exists()
  assert cells.finished_summary(cell, tmp_path / 'fedmf-s0')['best_round'] == 5  # still read, not rerun


def test_keep_program_state_keeps_a_finished_cells_saved_states(tmp_path):
  cell = _FinishingCell(name='fedmf-s0', row='FedMF', flags=(('algorithm', 'fedmf'),))
  cells.run_cell(cell, tmp_path / 'fedmf-s0', keep_program_state=True)
  assert (tmp_path / 'fedmf-s0' / cells.PROGRAM_STATE_DIR / 'arrays_5' / 'a.npy').stat().st_size == 1000


def test_a_failed_cell_keeps_its_program_state_to_resume_from(tmp_path):
  cell = _FinishingCell(name='fedmf-s0', row='FedMF', flags=(('algorithm', 'fedmf'),), fail=True)
  with pytest.raises(cells.CellError, match=r'failed \(exit 3\)'):
    cells.run_cell(cell, tmp_path / 'fedmf-s0')
  assert (tmp_path / 'fedmf-s0' / cells.PROGRAM_STATE_DIR / 'arrays_5' / 'a.npy').exists()


def test_a_cell_locked_by_another_runner_is_refused_not_run_twice(tmp_path):
  import fcntl
  import os
  cell_dir = tmp_path / 'fedmf-s0'
  cell_dir.mkdir()
  fd = os.open(cell_dir / cells.LOCK_FILE, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)  # another runner's cell in flight
  try:
    with pytest.raises(cells.CellError, match='fedmf-s0 is being run by another process'):
      cells.run_cell(cells.Cell.make('fedmf-s0', 'FedMF', algorithm='fedmf'), cell_dir)
  finally:
    os.close(fd)
  assert not (cell_dir / 'log.txt').exists()  # nothing was started


def test_a_cell_folder_moved_away_leaves_cells_csv_at_the_next_write(tmp_path):
  import pandas as pd
  for cell in ('fedmf-s0', 'mostpop-s0'):
    (tmp_path / cell).mkdir()
    (tmp_path / cell / 'summary.json').write_text('{}')
  cells.merge_csv(pd.DataFrame({'cell': ['fedmf-s0', 'mostpop-s0'], 'x': [1, 2]}), tmp_path / 'cells.csv')
  (tmp_path / 'mostpop-s0' / 'summary.json').unlink()  # the user moved the run away
  merged = cells.merge_csv(pd.DataFrame({'cell': ['fedmf-s0'], 'x': [3]}), tmp_path / 'cells.csv')
  assert merged.to_dict('list') == {'cell': ['fedmf-s0'], 'x': [3]}
  assert pd.read_csv(tmp_path / 'cells.csv').to_dict('list') == {'cell': ['fedmf-s0'], 'x': [3]}


def test_runners_merging_into_one_sweep_csv_at_once_keep_every_line(tmp_path, monkeypatch):
  import threading
  import time

  import pandas as pd
  names = [f'method{k}-s0' for k in range(6)]
  for cell in names:
    (tmp_path / cell).mkdir()
    (tmp_path / cell / 'summary.json').write_text('{}')
  write = cells.write_atomic

  def slow_write(path, text):  # widens the read-merge-write window a second runner could fall into
    time.sleep(0.05)
    write(path, text)

  monkeypatch.setattr(cells, 'write_atomic', slow_write)
  threads = [threading.Thread(target=cells.merge_csv,
                              args=(pd.DataFrame({'cell': [name], 'x': [k]}), tmp_path / 'cells.csv'))
             for k, name in enumerate(names)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert sorted(pd.read_csv(tmp_path / 'cells.csv')['cell']) == names


def test_a_results_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  cells.write_atomic(tmp_path / 'cells.csv', 'cell\nfedmf-s0\n')
  with pytest.raises(UnicodeEncodeError):  # fails inside the write, as a full disk (ENOSPC) does
    cells.write_atomic(tmp_path / 'cells.csv', 'cell\n\ud800\n')
  assert (tmp_path / 'cells.csv').read_text() == 'cell\nfedmf-s0\n'
  assert [p.name for p in tmp_path.iterdir()] == ['cells.csv']


def test_a_results_write_that_fails_after_writing_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path, monkeypatch):
  cells.write_atomic(tmp_path / 'cells.csv', 'cell\nfedmf-s0\n')

  def full_disk(*args):  # fails after `write` returned, as a buffered ENOSPC at close or the rename may
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(os, 'replace', full_disk)
  with pytest.raises(OSError, match='No space left'):
    cells.write_atomic(tmp_path / 'cells.csv', 'cell\nrqfedrec-s0\n')
  assert (tmp_path / 'cells.csv').read_text() == 'cell\nfedmf-s0\n'
  assert [p.name for p in tmp_path.iterdir()] == ['cells.csv']


def test_a_refusal_over_the_learning_rate_names_the_runners_hyperparameter_sets(tmp_path):
  _write_run(tmp_path / 'c', {'algorithm': 'fedmf', 'learning_rate': 0.01})
  cell = cells.Cell.make('c', 'FedMF', algorithm='fedmf', learning_rate=0.001)
  with pytest.raises(cells.CellError, match=r'from --hyperparameters \(validated or pre_grid\)$'):
    cells.finished_summary(cell, tmp_path / 'c')
  other = cells.Cell.make('c', 'FedMF', algorithm='fedncf', learning_rate=0.01)
  with pytest.raises(cells.CellError, match=r'--output_dir$'):  # no hint when another flag differs
    cells.finished_summary(other, tmp_path / 'c')

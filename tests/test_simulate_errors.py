"""Bad input to `launchers.simulate` is one line, `error: ...`, exit status 2, and nothing written.

Table-driven over the cases of issue 10; the launcher runs in-process (flags parsed as absl would),
and each case fails before any TFF worker starts. What the loader does with input that is not an
error (duplicate rows: the first kept; non-numeric ids: tokens) is in `tests/data/test_interactions.py`.
"""

from __future__ import annotations

import json

from absl import flags
import pytest

NUM_USERS = 30


def _write_interactions(path, header='user_id\titem_id\trating\ttimestamp', users=NUM_USERS):
  lines = [header] + [f'{u + 1}\t{101 + (u + j) % 40}\t4\t{1000 + j}' for u in range(users)
                      for j in range(6)]
  path.write_text('\n'.join(lines) + '\n')
  return path


@pytest.fixture
def launch(capsys):
  from launchers import simulate

  def run(*args):
    """(exit status, stderr lines) of the launcher with `args`."""
    flags.FLAGS.unparse_flags()
    try:
      simulate.main(simulate.parse_flags(['simulate', *args]))
      code = 0
    except SystemExit as e:
      code = e.code
    return code, capsys.readouterr().err.strip().splitlines()

  yield run
  flags.FLAGS.unparse_flags()


def _cases(tmp_path):
  good = _write_interactions(tmp_path / 'good.tsv')
  misspelled = _write_interactions(tmp_path / 'misspelled.tsv', header='usr_id\titem_id\trating\ttimestamp')
  missing = tmp_path / 'missing_column.tsv'
  missing.write_text('user_id\trating\n1\t4\n')
  empty = tmp_path / 'empty.tsv'
  empty.write_text('')
  items = tmp_path / 'items.tsv'
  items.write_text('item_id\ttext\n' + ''.join(f'{101 + i}\tmovie {i}\n' for i in range(30)))
  file = ['--dataset=file', f'--interactions_file={good}', '--clients=3']
  return {
      'misspelled column': (['--dataset=file', f'--interactions_file={misspelled}'],
                            [str(misspelled), "'user_id'"]),
      'missing column': (['--dataset=file', f'--interactions_file={missing}'], [str(missing), "'item_id'"]),
      'empty file': (['--dataset=file', f'--interactions_file={empty}'], [str(empty), 'empty']),
      'no interaction file': (['--dataset=file'], ['--interactions_file']),
      'item file lacks items': (file + [f'--item_file={items}'], [str(good), "'131'", str(items)]),
      'more clients than users': (file[:2] + ['--clients=31'], ['--clients=31', '30 users']),
      'M above the item count': (file + ['--algorithm=rqfedrec', '--codes_per_level=36'],
                                 ['--codes_per_level=36', '35 items']),
      'default M above the item count': (file + ['--algorithm=rqfedrec'],
                                         ['--codes_per_level=512 (the default)', '35 items']),
      'L = 0': (file + ['--levels=0'], ['--levels', '0']),
      'tau = 0': (file + ['--refresh_every=0'], ['--refresh_every', '0']),
      'negative delta': (file + ['--laplace_scale=-0.1'], ['--laplace_scale', '-0.1']),
      'd = 0': (file + ['--embedding_dim=0'], ['--embedding_dim', '0']),
      'unknown algorithm': (file + ['--algorithm=fedavg'], ['--algorithm', 'fedavg']),
      'cold item ratio of 1': (file + ['--cold_item_ratio=1'], ['--cold_item_ratio', '1']),
      'client sampling for GPFedRec': (file + ['--algorithm=gpfedrec', '--client_fraction=0.5'],
                                       ['--client_fraction', '0.5', '--algorithm=gpfedrec']),
      'client fraction of 0': (file + ['--client_fraction=0'], ['--client_fraction', '0']),
      'more client shards than clients in a round': (file + ['--clients=4', '--client_shards=5'],
                                                     ['--client_shards=5', '4 clients']),
      'fewer client shards than workers': (file + ['--client_shards=2', '--workers=3'],
                                           ['--client_shards=2', '3 workers']),
      'a worker address without a port': (file + ['--workers=localhost'], ['--workers', "'localhost'"]),
      'similarity tracking without a server table': (file + ['--algorithm=pfedrec', '--track_similarity'],
                                                     ['--track_similarity', '--algorithm=pfedrec']),
  }


CASES = ['misspelled column', 'missing column', 'empty file', 'no interaction file', 'item file lacks items',
         'more clients than users', 'M above the item count', 'default M above the item count', 'L = 0',
         'tau = 0', 'negative delta', 'd = 0', 'unknown algorithm',
         'cold item ratio of 1', 'client sampling for GPFedRec',
         'client fraction of 0', 'similarity tracking without a server table',
         'more client shards than clients in a round', 'fewer client shards than workers',
         'a worker address without a port']


@pytest.mark.parametrize('case', CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(launch, tmp_path, case):
  args, quoted = _cases(tmp_path)[case]
  output_dir = tmp_path / 'out'
  code, err = launch(*args, f'--output_dir={output_dir}', '--progress=false')
  assert code == 2
  assert len(err) == 1 and err[0].startswith('error: '), err
  for text in quoted:
    assert text in err[0]
  assert not output_dir.exists()


def test_missing_output_dir_flag_is_one_line(launch):
  code, err = launch('--algorithm=fedmf')
  assert code == 2 and err == [
      'error: flag --output_dir=None: Flag --output_dir must have a value other than None.']


def test_folder_of_a_different_run_is_refused_unless_overwrite(launch, tmp_path):
  good = _write_interactions(tmp_path / 'good.tsv')
  output_dir = tmp_path / 'out'
  output_dir.mkdir()
  recorded = {'algorithm': 'fedmf', 'seed': 1, 'learning_rate': 0.01}
  (output_dir / 'flags.json').write_text(json.dumps(recorded))
  args = ['--dataset=file', f'--interactions_file={good}', f'--output_dir={output_dir}', '--algorithm=mostpop']
  code, err = launch(*args)
  assert code == 2 and len(err) == 1
  assert err[0].startswith(f'error: --output_dir={output_dir} holds a run with --algorithm=')
  assert json.loads((output_dir / 'flags.json').read_text()) == recorded  # untouched
  code, _ = launch(*args, '--overwrite')
  assert code == 0  # MostPop runs and replaces the folder's results
  assert json.loads((output_dir / 'flags.json').read_text())['algorithm'] == 'mostpop'
  assert (output_dir / 'summary.json').exists()


def test_users_without_train_or_test_interactions_are_run_and_named(launch, tmp_path):
  path = _write_interactions(tmp_path / 'sparse.tsv')
  with open(path, 'a') as f:
    f.write('31\t101\t4\t2000\n')  # one interaction: the per_user split keeps it for training
  code, err = launch('--dataset=file', f'--interactions_file={path}', '--protocol=per_user',
                     '--algorithm=mostpop', f'--output_dir={tmp_path / "out"}')
  assert code == 0
  assert err == ['note: 1 of 31 users have no test interaction; the metrics average over the others']
  assert (tmp_path / 'out' / 'summary.json').exists()

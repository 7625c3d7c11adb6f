"""End-to-end: a FedRAP run of `launchers.simulate` on a tiny file, then `launchers.fedrap_parts` on its folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tff_rqfed.algorithms import fedrap
from tff_rqfed.experiments import quick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT_SCALE = 0.1
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


def _run(*command, timeout=300):
  # A TFF worker left behind would keep the captured pipes open past the launcher's exit: the
  # timeout turns that into a failure instead of a hang.
  return subprocess.run([sys.executable, '-m', *command], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=timeout)


def _simulate(output_dir, interactions_file, *extra):
  proc = _run('launchers.simulate', '--algorithm=fedrap', '--dataset=file', '--protocol=per_user',
              f'--interactions_file={interactions_file}', '--partition=blocks', '--clients=3',
              '--embedding_dim=8', '--rounds=3', '--checkpoint_every=1', '--learning_rate=0.05',
              f'--init_scale={INIT_SCALE}', '--progress=false', f'--output_dir={output_dir}', *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope='module')
def parts_of_runs(tmp_path_factory):
  """{name: (run folder, fedrap_parts process)} for FedRAP as published and with D frozen."""
  root = tmp_path_factory.mktemp('fedrap_parts')
  interactions_file = root / 'synthetic.tsv'
  quick.write_interactions(interactions_file)
  result = {}
  for name, extra in (('default', ()), ('frozen_d', ('--fedrap_personal_lr_scale=0',))):
    _simulate(root / name, interactions_file, *extra)
    result[name] = (root / name, _run('launchers.fedrap_parts', f'--output_dir={root / name}'))
  return result


def test_parts_of_a_fedrap_run_are_scored_and_written_beside_it(parts_of_runs):
  run_dir, proc = parts_of_runs['default']
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((run_dir / 'fedrap_parts.json').read_text())
  assert result['round'] == 3
  assert list(result['parts']) == list(fedrap.PARTS)
  for metrics in result['parts'].values():
    for on in ('valid', 'test'):
      assert set(metrics[on]) == {'correct', 'paper'}
      assert 0.0 <= metrics[on]['correct']['ndcg@10'] <= 1.0
  assert 'personal + global' in proc.stdout and 'Round 3 of' in proc.stdout
  # The folder's own run is untouched: its summary was written by the simulation, not by this.
  assert json.loads((run_dir / 'summary.json').read_text())['rounds_run'] == 3


def test_fedraps_own_score_gives_the_runs_validation_metric_of_the_saved_round(parts_of_runs):
  run_dir, _ = parts_of_runs['default']
  rounds = pd.read_csv(run_dir / 'rounds.csv').set_index('round')
  result = json.loads((run_dir / 'fedrap_parts.json').read_text())
  valid = result['parts']['personal + global']['valid']
  assert valid['correct']['ndcg@10'] == pytest.approx(rounds.loc[3, 'valid_ndcg@10'], abs=1e-6)
  assert valid['paper']['ndcg@10'] == pytest.approx(rounds.loc[3, 'valid_paper_ndcg@10'], abs=1e-6)


def test_a_frozen_personal_table_stays_at_its_initial_scale(parts_of_runs):
  run_dir, proc = parts_of_runs['frozen_d']
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((run_dir / 'fedrap_parts.json').read_text())
  # D ~ N(0, INIT_SCALE^2) and never trained: mean |value| is INIT_SCALE * sqrt(2 / pi) (40 x 8 values
  # a client, 3 clients, so within a few percent).
  assert result['mean_abs_value']['personal'] == pytest.approx(INIT_SCALE * np.sqrt(2 / np.pi), rel=0.1)
  default = json.loads((parts_of_runs['default'][0] / 'fedrap_parts.json').read_text())
  assert default['mean_abs_value']['personal'] > 1.2 * result['mean_abs_value']['personal']


@pytest.mark.parametrize('setup, message', [
    ('no_run', 'flags.json: not found'),
    ('not_fedrap', "algorithm is 'fedmf', not 'fedrap'"),
])
def test_a_folder_without_a_fedrap_run_is_one_line_and_status_2(tmp_path, setup, message):
  if setup == 'not_fedrap':
    (tmp_path / 'flags.json').write_text(json.dumps({'algorithm': 'fedmf'}))
  proc = _run('launchers.fedrap_parts', f'--output_dir={tmp_path}', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert message in proc.stderr
  assert not (tmp_path / 'fedrap_parts.json').exists()

"""Tests of the simulation loop with a scripted stand-in for a federated process (no TFF)."""

import gc
import json
import os
import signal
import weakref

import numpy as np
import pandas as pd
import pytest

from tff_rqfed import simulation
from tff_rqfed.data.protocols import Split


class ScriptedProcess:
  """Ranks the validation item first in the rounds listed in `good_rounds`, last otherwise."""

  name = 'scripted'
  communication = {'upload': 3, 'download': 5}

  def __init__(self, good_rounds, interrupt_at=None):
    self.good_rounds = set(good_rounds)
    self.interrupt_at = interrupt_at

  def initialize(self):
    return {'round': 0}

  def initial_client_states(self, clients):
    return [None for _ in clients]

  def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
    del data
    if round_num == self.interrupt_at:
      raise KeyboardInterrupt
    return {'round': round_num}, client_states, {'loss': 1.0 / round_num}

  def scores(self, state, client_states, clients, num_users):
    scores = np.tile(np.arange(6, dtype=np.float32)[::-1], (num_users, 1))  # item 0 best
    if state['round'] in self.good_rounds:
      scores[:, 5] = 100.0  # the validation item
    return scores


def _split():
  # 2 users, 6 items: train item 0, validation item 5, test item 1.
  return Split(train=np.array([[0, 0], [1, 0]], np.int32), valid=np.array([[0, 5], [1, 5]], np.int32),
               test=np.array([[0, 1], [1, 1]], np.int32), num_users=2, num_items=6)


class _Client:
  local_users = np.zeros(1, np.int32)
  items = np.zeros(1, np.int32)


def _run(tmp_path, process, **config):
  return simulation.run_simulation(
      process, split=_split(), clients=[_Client()], output_dir=tmp_path,
      config=simulation.SimulationConfig(progress=False, k=3, **config))


def test_early_stopping_keeps_the_best_round_and_stops_after_patience(tmp_path):
  summary = _run(tmp_path, ScriptedProcess(good_rounds={3}), rounds=50, patience=4)
  assert summary['best_round'] == 3
  assert summary['rounds_run'] == 7
  assert summary["valid"]["ndcg@3"] == pytest.approx(1.0)


class _CountingProcess(ScriptedProcess):
  """Each client's state counts the rounds it trained; the best round is round 2."""

  def initial_client_states(self, clients):
    return [np.zeros(1) for _ in clients]

  def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
    new_state, _, metrics = super().next(state, client_states, data, round_num=round_num)
    return new_state, [s + 1 for s in client_states], metrics


@pytest.mark.parametrize('keep', [False, True])
def test_the_best_rounds_states_are_copied_only_when_on_finish_needs_them(tmp_path, keep):
  seen = {}

  def on_finish(summary, best_state, best_client_states):
    seen.update(round=best_state['round'] if keep else best_state,
                states=[s.tolist() for s in best_client_states])
    return {}

  summary = simulation.run_simulation(
      _CountingProcess(good_rounds={2}), split=_split(), clients=[_Client()], output_dir=tmp_path,
      on_finish=on_finish, config=simulation.SimulationConfig(
          progress=False, k=3, rounds=5, patience=10, keep_best_states=keep))
  # The test metrics are round 2's (its scores are kept) whether or not its client states are.
  assert summary['best_round'] == 2 and summary['valid']['ndcg@3'] == pytest.approx(1.0)
  assert seen == {'round': 2, 'states': [[2.0]]} if keep else {'round': [], 'states': []}


class _StateLifetimeProcess(_CountingProcess):
  """Records, in each round, which earlier rounds' client states are still alive."""

  def __init__(self):
    super().__init__(good_rounds={1})
    self.refs, self.alive_in_round = [], {}

  def initial_client_states(self, clients):
    states = super().initial_client_states(clients)
    self.refs.append([weakref.ref(s) for s in states])
    return states

  def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
    gc.collect()
    self.alive_in_round[round_num] = [i for i, refs in enumerate(self.refs)
                                      if any(r() is not None for r in refs)]
    new_state, states, metrics = super().next(state, client_states, data, round_num=round_num)
    self.refs.append([weakref.ref(s) for s in states])
    return new_state, states, metrics


def test_a_rounds_replaced_client_states_are_freed(tmp_path):
  # One user per client the states are the run's largest values (FedRAP: 3.2 GB): only the current
  # round's may stay alive, not the initial ones nor a copy of the best round's.
  process = _StateLifetimeProcess()
  _run(tmp_path, process, rounds=4, patience=10)
  # refs[0] are the initial states, refs[t] round t's: entering round t only round t - 1's are alive.
  assert process.alive_in_round == {1: [0], 2: [1], 3: [2], 4: [3]}


def test_patience_counts_only_after_min_rounds(tmp_path):
  summary = _run(tmp_path, ScriptedProcess(good_rounds={2}), rounds=50, patience=4, min_rounds=20)
  assert summary['best_round'] == 2
  assert summary['rounds_run'] == 24


def test_results_files_are_written_with_one_row_per_round(tmp_path):
  summary = _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=3, patience=10, save_topk=True)
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['test'] == summary['test'] and on_disk['communication'] == {'upload': 3, 'download': 5}
  rounds = pd.read_csv(tmp_path / 'rounds.csv')
  assert rounds['round'].tolist() == [1, 2, 3]
  assert rounds['loss'].tolist() == pytest.approx([1.0, 1 / 2, 1 / 3])  # the process's metrics
  assert rounds['valid_ndcg@3'].tolist() == pytest.approx([1.0, 0.0, 0.0])
  # Each test user's top-3 with its train (0) and validation (5) items masked: 1, 2, 3.
  topk = pd.read_csv(tmp_path / 'topk.csv')
  assert topk.values.tolist() == [[0, 1, 2, 3], [1, 1, 2, 3]]
  assert list(topk.columns) == ['user_id', 'item_1', 'item_2', 'item_3']


def test_interrupt_still_evaluates_and_writes_the_best_state(tmp_path):
  summary = _run(tmp_path, ScriptedProcess(good_rounds={2}, interrupt_at=4), rounds=50, patience=10)
  assert summary['interrupted'] is True
  assert summary['best_round'] == 2 and summary['rounds_run'] == 3
  # Evaluated with round 2's state (validation item first), not the last state (round 3).
  assert summary['valid']['ndcg@3'] == pytest.approx(1.0)
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary
  assert len(pd.read_csv(tmp_path / 'rounds.csv')) == 3


class Stop(Exception):
  """What the run's own SIGTERM handler raises in these tests (as `execution.Terminated`, but not a
  KeyboardInterrupt, so that a regression fails the test instead of stopping pytest)."""


@pytest.fixture
def sigterm_raises_stop():
  """SIGTERM raises `Stop` outside the simulation loop; yields the handler."""

  def stop(signum, frame):
    raise Stop

  previous = signal.signal(signal.SIGTERM, stop)
  yield stop
  signal.signal(signal.SIGTERM, previous)


class SignalledWhileScoringProcess(ScriptedProcess):
  """Sends itself SIGTERM in its `signal_at`-th call of `scores`: the final evaluation of the best
  state, after every round's validation."""

  def __init__(self, good_rounds, *, signal_at, **kwargs):
    super().__init__(good_rounds, **kwargs)
    self.signal_at, self.calls = signal_at, 0

  def scores(self, state, client_states, clients, num_users):
    self.calls += 1
    if self.calls == self.signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
    return super().scores(state, client_states, clients, num_users)


@pytest.mark.parametrize('interrupt_at, evaluated_rounds', [(None, 5), (4, 3)])
def test_a_signal_during_the_final_evaluation_still_writes_the_summary(tmp_path, interrupt_at,
                                                                      evaluated_rounds,
                                                                      sigterm_raises_stop):
  """A SIGTERM after training stopped (a second one after an interrupt, or one as the last round
  ends) is noted, not raised: the summary is written, marked interrupted."""
  process = SignalledWhileScoringProcess(good_rounds={2}, interrupt_at=interrupt_at,
                                         signal_at=evaluated_rounds + 1)
  summary = _run(tmp_path, process, rounds=5, patience=10)
  assert signal.getsignal(signal.SIGTERM) is sigterm_raises_stop  # the run's handler is back
  assert process.calls > evaluated_rounds  # the signal was sent, in the final evaluation
  assert summary['interrupted'] is True and summary['best_round'] == 2
  assert summary['rounds_run'] == evaluated_rounds
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary


class SignalledInRoundProcess(ScriptedProcess):
  """Sends itself SIGTERM inside round `signal_in`, then finishes the round or, with `fail`, raises
  RuntimeError (as a round whose TFF worker a terminal's Ctrl-C stopped too)."""

  def __init__(self, good_rounds, *, signal_in, fail=False):
    super().__init__(good_rounds)
    self.signal_in, self.fail = signal_in, fail

  def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
    if round_num == self.signal_in:
      os.kill(os.getpid(), signal.SIGTERM)
      if self.fail:
        raise RuntimeError('the worker is gone')
    return super().next(state, client_states, data, round_num=round_num)


def test_a_signal_during_a_round_lets_the_round_finish_then_stops(tmp_path, sigterm_raises_stop):
  summary = _run(tmp_path, SignalledInRoundProcess(good_rounds={2}, signal_in=3), rounds=50,
                 patience=10)
  assert signal.getsignal(signal.SIGTERM) is sigterm_raises_stop
  assert summary['interrupted'] is True
  assert summary['rounds_run'] == 3 and summary['best_round'] == 2
  assert pd.read_csv(tmp_path / 'rounds.csv')['round'].tolist() == [1, 2, 3]
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary


def test_a_round_that_fails_after_a_stop_request_is_dropped_and_the_best_state_written(
    tmp_path, sigterm_raises_stop):
  summary = _run(tmp_path, SignalledInRoundProcess(good_rounds={2}, signal_in=3, fail=True),
                 rounds=50, patience=10)
  assert summary['interrupted'] is True
  assert summary['rounds_run'] == 2 and summary['best_round'] == 2
  assert summary['valid']['ndcg@3'] == pytest.approx(1.0)
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary


def test_a_round_that_fails_without_a_stop_request_raises_its_error(tmp_path):

  class FailingProcess(ScriptedProcess):

    def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
      if round_num == 2:
        raise RuntimeError('round 2 failed')
      return super().next(state, client_states, data, round_num=round_num)

  with pytest.raises(RuntimeError, match='round 2 failed'):
    _run(tmp_path, FailingProcess(good_rounds={1}), rounds=5, patience=10)
  assert not (tmp_path / 'summary.json').exists()
  assert pd.read_csv(tmp_path / 'rounds.csv')['round'].tolist() == [1]


def test_config_rejects_bad_values_quoting_them():
  with pytest.raises(ValueError, match='patience.*0'):
    simulation.SimulationConfig(patience=0)
  with pytest.raises(ValueError, match='min_rounds.*-1'):
    simulation.SimulationConfig(min_rounds=-1)


class FixedScores(ScriptedProcess):
  """Scores that make masking visible (2 users, 6 items; item 0 is both users' train item).

  User 0: validation item 5 (score 200) above test item 1 (100). User 1: test item 2 (200) above
  validation item 4 (100). The train item scores 300 for both.
  """

  def __init__(self):
    super().__init__(good_rounds=())

  def scores(self, state, client_states, clients, num_users):
    scores = np.tile(np.array([300, 3, 2, 1, 0, 0], np.float32), (num_users, 1))
    scores[0, [5, 1]] = 200, 100
    scores[1, [2, 4]] = 200, 100
    return scores


def test_test_ranking_masks_train_and_validation_items_and_validation_masks_train_only(tmp_path):
  # Test: with train and validation masked, each user's test item is first (MRR 1). Leaving user 0's
  # validation item unmasked puts it first and the test item second (MRR 0.75 overall).
  # Validation: only train is masked, so user 1's test item stays above its validation item
  # (MRR 0.5 for user 1, 0.75 overall); masking test items there too would give 1.
  split = Split(train=np.array([[0, 0], [1, 0]], np.int32), valid=np.array([[0, 5], [1, 4]], np.int32),
                test=np.array([[0, 1], [1, 2]], np.int32), num_users=2, num_items=6)
  summary = simulation.run_simulation(
      FixedScores(), split=split, clients=[_Client()], output_dir=tmp_path,
      config=simulation.SimulationConfig(progress=False, k=3, rounds=2, save_topk=True))
  assert summary['test']['mrr@3'] == 1.0 and summary['test']['recall@3'] == 1.0
  assert summary['valid']['mrr@3'] == pytest.approx(0.75)
  rounds = (tmp_path / 'rounds.csv').read_text().splitlines()
  header = rounds[0].split(',')
  assert float(rounds[1].split(',')[header.index('valid_mrr@3')]) == pytest.approx(0.75)
  # The saved top-3 lists are the test ranking: no train or validation item in them.
  topk = (tmp_path / 'topk.csv').read_text().splitlines()[1:]
  assert topk == ['0,1,2,3', '1,2,1,3']


def test_tensorboard_events_hold_each_rounds_metrics_at_its_round(tmp_path):
  import tensorflow as tf
  _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=3, patience=10, tensorboard=True)
  losses = {}
  for path in (tmp_path / simulation.TENSORBOARD_DIR).iterdir():
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == 'loss':
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  assert losses == pytest.approx({1: 1.0, 2: 1 / 2, 3: 1 / 3})


def test_without_tensorboard_no_event_files_are_written(tmp_path):
  _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=2, patience=10)
  assert not (tmp_path / simulation.TENSORBOARD_DIR).exists()


def test_a_new_run_in_the_same_folder_replaces_the_rounds_of_the_old_one(tmp_path):
  _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=4, patience=10)
  _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=2, patience=10)
  assert pd.read_csv(tmp_path / 'rounds.csv')['round'].tolist() == [1, 2]


def test_resume_reruns_the_rounds_after_the_saved_state_once_each_in_rounds_csv(tmp_path):
  # Interrupted in round 6: rounds 1-5 are in rounds.csv, the state of round 4 is saved.
  first = _run(tmp_path, ScriptedProcess(good_rounds={1}, interrupt_at=6), rounds=8, patience=10,
               checkpoint_every=2)
  assert first['interrupted'] and len(pd.read_csv(tmp_path / 'rounds.csv')) == 5
  resumed = _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=8, patience=10, checkpoint_every=2,
                 resume=True)
  assert resumed['resumed_from_round'] == 4
  rounds = pd.read_csv(tmp_path / 'rounds.csv')
  assert rounds['round'].tolist() == list(range(1, 9))
  assert rounds['loss'].tolist() == pytest.approx([1 / r for r in range(1, 9)])


class _ScoreCountingProcess(ScriptedProcess):
  def __init__(self, good_rounds):
    super().__init__(good_rounds)
    self.scored_rounds = []

  def scores(self, state, client_states, clients, num_users):
    self.scored_rounds.append(state['round'])
    return super().scores(state, client_states, clients, num_users)


def test_a_resumed_run_scores_only_the_rounds_it_runs_not_the_initial_state(tmp_path):
  _run(tmp_path, ScriptedProcess(good_rounds={3}), rounds=4, patience=10, checkpoint_every=2)
  process = _ScoreCountingProcess(good_rounds={3})
  resumed = _run(tmp_path, process, rounds=6, patience=10, checkpoint_every=2, resume=True)
  assert resumed['resumed_from_round'] == 4 and process.scored_rounds == [5, 6]
  assert resumed['best_round'] == 3 and resumed['test']['recall@3'] == pytest.approx(1.0)
  fresh = _ScoreCountingProcess(good_rounds={3})  # --resume with nothing saved: round 0 is scored
  _run(tmp_path / 'empty', fresh, rounds=1, patience=10, resume=True)
  assert fresh.scored_rounds == [0, 1]


def test_resuming_a_state_of_another_structure_names_the_folder_and_overwrite(tmp_path):
  # Saved without the best round's states (no attack), resumed by a run that keeps them: the saved
  # structure differs, as for a state written by an earlier version of the loop.
  _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=2, patience=10, checkpoint_every=1)
  with pytest.raises(simulation.StateMismatchError,
                     match=r'program_state holds a program state of another structure.*--overwrite'):
    _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=4, patience=10, checkpoint_every=1,
         resume=True, keep_best_states=True)


def test_summary_scores_the_test_items_of_each_popularity_third(tmp_path):
  summary = _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=2, patience=10)
  groups = summary['test_item_groups']
  assert list(groups) == ['head', 'torso', 'tail']
  # Item 0 holds every training interaction (head); test item 1 is in the tail, ranked first by both
  # users once train item 0 and validation item 5 are masked.
  assert groups['head']['items'] == 1 and groups['head']['recall@3'] is None
  assert groups['tail']['test_pairs'] == 2 and groups['tail']['recall@3'] == pytest.approx(1.0)


def test_participants_are_all_clients_at_fraction_one_and_a_seeded_sample_otherwise():
  np.testing.assert_array_equal(simulation.participants(5, fraction=1.0, seed=0, round_num=3), np.arange(5))
  a = simulation.participants(100, fraction=0.1, seed=0, round_num=3)
  assert len(a) == 10 and (np.diff(a) > 0).all()
  np.testing.assert_array_equal(a, simulation.participants(100, fraction=0.1, seed=0, round_num=3))
  assert not np.array_equal(a, simulation.participants(100, fraction=0.1, seed=0, round_num=4))
  assert len(simulation.participants(3, fraction=0.01, seed=0, round_num=1)) == 1  # at least one


class CountingProcess(ScriptedProcess):
  """Each client's state counts the rounds it took part in; records who took part and their data."""

  def __init__(self):
    super().__init__(good_rounds={1})
    self.calls, self.seen_states = [], []

  def initial_client_states(self, clients):
    return [0 for _ in clients]

  def next(self, state, client_states, data, *, round_num, shards=1, workers=None):
    self.calls.append([int(d['client_index']) for d in data])
    return {'round': round_num}, [s + 1 for s in client_states], {'loss': 1.0}

  def scores(self, state, client_states, clients, num_users):
    self.seen_states.append(list(client_states))
    return super().scores(state, client_states, clients, num_users)


def test_only_the_rounds_participants_train_and_the_others_keep_their_state(tmp_path):
  process = CountingProcess()
  clients = [_Client() for _ in range(10)]
  summary = simulation.run_simulation(
      process, split=_split(), clients=clients, output_dir=tmp_path,
      config=simulation.SimulationConfig(progress=False, k=3, rounds=6, patience=10, client_fraction=0.3))
  assert summary['rounds_run'] == 6
  assert [len(call) for call in process.calls] == [3] * 6
  for round_num, call in enumerate(process.calls, start=1):
    assert call == simulation.participants(10, fraction=0.3, seed=0, round_num=round_num).tolist()
  # Scored once at round 0 (the initial best), then after each round: after round 6 each client's
  # state counts exactly the rounds it took part in.
  taken = np.bincount(np.concatenate(process.calls), minlength=10).tolist()
  assert len(process.seen_states) == 7 and process.seen_states[0] == [0] * 10
  assert process.seen_states[6] == taken and sum(taken) == 18


def test_client_fraction_outside_zero_one_is_refused_quoting_it():
  with pytest.raises(ValueError, match='client_fraction.*1.5'):
    simulation.SimulationConfig(client_fraction=1.5)


class TableProcess(ScriptedProcess):
  """A server item table that turns a little each round (for Fig. 4's tracking)."""

  def item_embeddings(self, state):
    angle = 0.1 * state['round']
    base = np.random.default_rng(0).normal(size=(6, 2))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return base + np.array([[1.0, 0.0]]) @ rotation * state['round']


def test_similarity_tracking_releases_each_rounds_block_change_against_the_previous_round(tmp_path):
  import json as json_lib
  from tff_rqfed.evaluation import similarity_change
  process = TableProcess(good_rounds={1})
  _run(tmp_path, process, rounds=3, patience=10, track_similarity=True)
  released = pd.read_csv(tmp_path / simulation.SIMILARITY_FILE)
  assert released['round'].tolist() == [1, 2, 3]
  groups = similarity_change.random_item_groups(6, groups=6, seed=0)  # 20 groups capped at 6 items
  for round_num, cell in zip([1, 2, 3], released['blocks']):
    expected = similarity_change.block_change(process.item_embeddings({'round': round_num - 1}),
                                              process.item_embeddings({'round': round_num}), groups)
    np.testing.assert_allclose(np.array(json_lib.loads(cell)), expected, rtol=1e-12)
  rounds = pd.read_csv(tmp_path / 'rounds.csv')
  assert (rounds['item_similarity_change'] > 0).all()


def test_similarity_tracking_of_a_process_without_a_server_item_table_is_refused(tmp_path):
  with pytest.raises(ValueError, match='scripted has no item table'):
    _run(tmp_path, ScriptedProcess(good_rounds={1}), rounds=2, track_similarity=True)

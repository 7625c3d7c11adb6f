"""The hyperparameter sets: the grid's choice, and the values the tables ran with before the grid."""

from __future__ import annotations

import pytest

from tff_rqfed import hyperparameters


def test_validated_set_is_the_launchers_defaults():
  for algorithm in hyperparameters.DEFAULT_LEARNING_RATE:
    floor = ({} if algorithm == 'rqfedrec'
             else {'min_rounds': hyperparameters.DEFAULT_MIN_ROUNDS[algorithm]})
    assert hyperparameters.defaults(algorithm) == {
        'learning_rate': hyperparameters.DEFAULT_LEARNING_RATE[algorithm],
        'weight_decay': hyperparameters.DEFAULT_WEIGHT_DECAY[algorithm],
        'init_scale': hyperparameters.DEFAULT_INIT_SCALE[algorithm], **floor}


def test_validated_set_floors_early_stopping_at_round_30_for_the_methods_through_the_grid():
  for algorithm in ('fedmf', 'pfedrec', 'fedrap', 'fedncf', 'gpfedrec', 'fedalphafuse', 'fedrlm_con',
                    'fedrlm_gen'):
    assert hyperparameters.defaults(algorithm)['min_rounds'] == 30
    assert hyperparameters.defaults(algorithm, 'pre_grid')['min_rounds'] == 0
  # Not yet through the grid: the pre-grid protocol, no floor.
  for algorithm in ('fedcia', 'mf_local'):
    assert hyperparameters.defaults(algorithm)['min_rounds'] == 0


def test_rqfedrec_has_no_floor_in_either_set_because_its_own_follows_warmup_and_refresh():
  assert 'min_rounds' not in hyperparameters.defaults('rqfedrec')
  assert 'min_rounds' not in hyperparameters.defaults('rqfedrec', 'pre_grid')


def test_early_stop_floor_is_warmup_plus_refresh_for_rqfedrec_and_the_sets_floor_otherwise():
  floor = hyperparameters.early_stop_floor
  for hyperparameter_set in ('validated', 'pre_grid'):
    assert floor('rqfedrec', warmup_rounds=20, refresh_every=10, hyperparameter_set=hyperparameter_set) == 30
  assert floor('fedmf', warmup_rounds=20, refresh_every=10) == 30
  assert floor('fedmf', warmup_rounds=20, refresh_every=10, hyperparameter_set='pre_grid') == 0
  assert floor('mostpop', warmup_rounds=20, refresh_every=10) == 0


def test_pre_grid_set_is_lr_0_01_without_weight_decay_at_the_same_init_scales():
  assert hyperparameters.defaults('fedmf', 'pre_grid') == {
      'learning_rate': 0.01, 'weight_decay': 0.0, 'init_scale': 0.01, 'min_rounds': 0}
  assert hyperparameters.defaults('rqfedrec', 'pre_grid')['learning_rate'] == 0.01
  assert hyperparameters.defaults('mf_local', 'pre_grid')['init_scale'] == 0.1
  # Methods the grid has not moved are the same in both sets.
  for algorithm in ('fedcia', 'mf_local'):
    assert hyperparameters.defaults(algorithm, 'pre_grid') == hyperparameters.defaults(algorithm)


def test_the_grid_moved_fedmf_rqfedrec_pfedrec_fedrap_fedncf_gpfedrec_and_fedalphafuse_so_the_sets_differ():
  for algorithm in ('fedmf', 'rqfedrec', 'pfedrec', 'fedrap', 'fedncf', 'gpfedrec', 'fedalphafuse'):
    assert hyperparameters.defaults(algorithm) != hyperparameters.defaults(algorithm, 'pre_grid')


@pytest.mark.parametrize('algorithm, hyperparameter_set, message', [
    ('fedmf', 'tuned', "hyperparameter set 'tuned' is unknown; known: ['pre_grid', 'validated']"),
    ('mostpop', 'validated', "'mostpop' has no hyperparameters"),
])
def test_unknown_set_or_algorithm_is_refused_by_name(algorithm, hyperparameter_set, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
    hyperparameters.defaults(algorithm, hyperparameter_set)


def test_early_stop_floor_refuses_an_unknown_set_by_name_as_defaults_does():
  for algorithm in ('fedmf', 'rqfedrec'):
    with pytest.raises(ValueError, match=r"hyperparameter set 'tuned' is unknown; known: \['pre_grid', 'validated'\]"):
      hyperparameters.early_stop_floor(algorithm, warmup_rounds=20, refresh_every=10, hyperparameter_set='tuned')


def test_stopping_in_passes_multiplies_patience_floor_cap_and_validation_interval_by_one_over_the_fraction():
  assert hyperparameters.stopping_in_passes(1.0, min_rounds=30) == {
      'patience': 10, 'min_rounds': 30, 'rounds': 300, 'eval_every': 1}
  assert hyperparameters.stopping_in_passes(0.1, min_rounds=30) == {
      'patience': 100, 'min_rounds': 300, 'rounds': 3000, 'eval_every': 10}
  assert hyperparameters.stopping_in_passes(0.3, min_rounds=0, patience=3, rounds=7) == {
      'patience': 10, 'min_rounds': 0, 'rounds': 23, 'eval_every': 3}
  with pytest.raises(ValueError, match='client_fraction must be in \\(0, 1\\], got 0.0'):
    hyperparameters.stopping_in_passes(0.0, min_rounds=30)


def test_rqfedrec_config_takes_its_schedule_defaults_from_these_constants():
  from tff_rqfed.algorithms import rqfedrec  # pylint: disable=g-import-not-at-top (imports TFF)
  config = rqfedrec.RQConfig()
  assert (hyperparameters.RQFEDREC_WARMUP_ROUNDS, hyperparameters.RQFEDREC_REFRESH_EVERY) == (
      config.warmup_rounds, config.refresh_every)

"""The hyperparameter sets: the grid's choice, and the values the tables ran with before the grid."""

from __future__ import annotations

import pytest

from tff_rqfed import hyperparameters


def test_validated_set_is_the_launchers_defaults():
  for algorithm in hyperparameters.DEFAULT_LEARNING_RATE:
    assert hyperparameters.defaults(algorithm) == {
        'learning_rate': hyperparameters.DEFAULT_LEARNING_RATE[algorithm],
        'weight_decay': hyperparameters.DEFAULT_WEIGHT_DECAY[algorithm],
        'init_scale': hyperparameters.DEFAULT_INIT_SCALE[algorithm]}


def test_pre_grid_set_is_lr_0_01_without_weight_decay_at_the_same_init_scales():
  assert hyperparameters.defaults('fedmf', 'pre_grid') == {
      'learning_rate': 0.01, 'weight_decay': 0.0, 'init_scale': 0.01}
  assert hyperparameters.defaults('rqfedrec', 'pre_grid')['learning_rate'] == 0.01
  assert hyperparameters.defaults('mf_local', 'pre_grid')['init_scale'] == 0.1
  # Methods the grid has not moved are the same in both sets.
  for algorithm in ('fedcia', 'mf_local'):
    assert hyperparameters.defaults(algorithm, 'pre_grid') == hyperparameters.defaults(algorithm)


def test_the_grid_moved_fedmf_rqfedrec_pfedrec_fedrap_fedncf_and_gpfedrec_so_the_two_sets_differ_there():
  for algorithm in ('fedmf', 'rqfedrec', 'pfedrec', 'fedrap', 'fedncf', 'gpfedrec'):
    assert hyperparameters.defaults(algorithm) != hyperparameters.defaults(algorithm, 'pre_grid')


@pytest.mark.parametrize('algorithm, hyperparameter_set, message', [
    ('fedmf', 'tuned', "hyperparameter set 'tuned' is unknown; known: ['pre_grid', 'validated']"),
    ('mostpop', 'validated', "'mostpop' has no hyperparameters"),
])
def test_unknown_set_or_algorithm_is_refused_by_name(algorithm, hyperparameter_set, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
    hyperparameters.defaults(algorithm, hyperparameter_set)

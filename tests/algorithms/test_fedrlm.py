"""FedRLM_con and FedRLM_gen on the planted two-community problem (Table 5; RLMRec's alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.algorithms import fedrlm
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import rlm_alignment

NUM_USERS, NUM_ITEMS, D = 32, 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


@pytest.mark.parametrize('variant, options, quoted', [
    ('both', {}, "'both'"), ('con', {'mask_ratio': 0.1}, 'mask_ratio'),
    ('con', {'temperature': 0.0}, 'temperature'), ('con', {'weight': -1.0}, 'weight'),
    ('gen', {'mask_ratio': 1.5}, '1.5')])
def test_bad_options_are_refused_and_quoted(planted_text, variant, options, quoted):
  with pytest.raises(ValueError, match=quoted):
    fedrlm.build_fedrlm(variant=variant, num_items=NUM_ITEMS, profile_embeddings=planted_text,
                        embedding_dim=D, **options)


def test_profiles_of_the_wrong_shape_are_refused_with_their_shape(planted_text):
  with pytest.raises(ValueError, match=r'\(39, 16\)'):
    fedrlm.build_fedrlm(variant='con', num_items=NUM_ITEMS, profile_embeddings=planted_text[:-1],
                        embedding_dim=D)


@pytest.fixture(scope='module', params=fedrlm.VARIANTS)
def fedrlm_run(request, tff_context, planted_problem, planted_text):
  _, clients = planted_problem
  process = fedrlm.build_fedrlm(variant=request.param, num_items=NUM_ITEMS, profile_embeddings=planted_text,
                                embedding_dim=D, training=TRAINING)
  return request.param, process, process.run(clients, rounds=15)


def test_fedrlm_learns_the_communities(planted_problem, fedrlm_run, assert_learned_the_communities):
  split, clients = planted_problem
  _, process, (state, client_states, history) = fedrlm_run
  assert history[-1]['loss'] < 0.7 * history[0]['loss']
  assert_learned_the_communities(process.scores(state, client_states, clients, NUM_USERS), split)


def test_the_process_is_named_as_the_algorithm_the_launchers_take_for_its_variant(fedrlm_run):
  variant, process, _ = fedrlm_run
  assert fedrlm.ALGORITHM_VARIANTS[process.name] == variant


def test_the_item_table_and_mlp_are_shared_and_counted_each_way(fedrlm_run):
  variant, process, (state, _, _) = fedrlm_run
  shapes = rlm_alignment.mlp_shapes(variant, embedding_dim=D, profile_dim=16)
  assert [np.shape(w) for w in state['shared']['mlp']] == shapes
  expected = NUM_ITEMS * D + sum(int(np.prod(shape)) for shape in shapes)
  assert process.communication['upload'] == process.communication['download'] == expected


def test_the_server_takes_the_weighted_mean_of_the_clients_uploads(planted_problem, fedrlm_run):
  _, clients = planted_problem
  _, process, (state, client_states, _) = fedrlm_run
  data = process_lib.client_data_values(clients, seed=0, round_num=16)
  outputs = [process.client_work(process.payload(state), c, x) for c, x in zip(client_states, data)]
  weights = np.array([float(o.weight) for o in outputs])
  next_state, _, _ = process.next(state, client_states, data, round_num=16)
  uploads = [[np.asarray(o.upload['items'])] + [np.asarray(w) for w in o.upload['mlp']] for o in outputs]
  got = [np.asarray(next_state['shared']['items'])] + [np.asarray(w) for w in next_state['shared']['mlp']]
  for part, value in enumerate(got):
    expected = np.average(np.stack([u[part] for u in uploads]), axis=0, weights=weights)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)

"""FedCIA (similarity aggregation and alignment) on the planted two-community problem."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.algorithms import fedcia
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import similarity_alignment

NUM_USERS, NUM_ITEMS, D = 32, 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)
ROUNDS = 15


def build(**options):
  options = {'num_items': NUM_ITEMS, 'embedding_dim': D, 'training': TRAINING, **options}
  return fedcia.build_fedcia(**options)


@pytest.fixture(scope='module')
def fedcia_run(tff_context, planted_problem):
  _, clients = planted_problem
  process = build(seed=0)
  return process, process.run(clients, rounds=ROUNDS)


def test_fedcia_lowers_training_loss_and_beats_popularity_and_random_ranking(
    planted_problem, fedcia_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = fedcia_run
  assert history[0]['loss'] == pytest.approx(np.log(2), abs=0.05)
  assert history[-1]['loss'] < 0.75 * history[0]['loss']
  assert history[0]['alignment_loss'] == 0.0  # round 1 has no mean similarity to align to
  assert all(m['alignment_loss'] > 0 for m in history[1:])
  assert int(state['round_num']) == ROUNDS
  assert_learned_the_communities(process.scores(state, client_states, clients, NUM_USERS), split)


def test_fedcia_server_keeps_the_spectrum_of_the_unweighted_mean_of_noisy_similarities(
    planted_problem, fedcia_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedcia_run
  data = process_lib.client_data_values(clients, seed=0, round_num=ROUNDS + 1)
  payload = process.payload(state)
  outputs = [process.client_work(payload, c, x) for c, x in zip(client_states, data)]
  uploads = np.stack([np.asarray(o.upload) for o in outputs])
  assert uploads.shape == (len(clients), NUM_ITEMS, NUM_ITEMS)
  for output in outputs:  # E E^T of the trained private table plus Laplace(0, 0.001) noise
    items = np.asarray(output.client_state['item_embeddings'])
    noise = np.asarray(output.upload) - items @ items.T
    assert 0.0005 < np.mean(np.abs(noise)) < 0.002  # E|Laplace(0, b)| = b = 0.001
    assert np.abs(noise - noise.T).max() > 1e-4  # drawn for every entry, not symmetric
  next_state, _, _ = process.next(state, client_states, data, round_num=ROUNDS + 1)
  mean = uploads.mean(axis=0)  # unweighted, although the clients hold different numbers of positives
  v, lam = np.asarray(next_state['eigenvectors']), np.asarray(next_state['eigenvalues'])
  np.testing.assert_allclose(v @ np.diag(lam) @ v.T, (mean + mean.T) / 2, atol=2e-5)
  anti = (mean - mean.T) / 2
  assert float(next_state['antisymmetric_sq_norm']) == pytest.approx(np.sum(anti**2), rel=1e-3)


def test_fedcia_client_aligns_its_private_table_then_trains_and_uploads_only_the_similarity(
    planted_problem, fedcia_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedcia_run
  assert sorted(dict(state)) == ['aggregator', 'antisymmetric_sq_norm', 'eigenvalues',
                                 'eigenvectors', 'round_num']
  assert str(process.upload_type) == f'float32[{NUM_ITEMS},{NUM_ITEMS}]'
  assert process.communication['upload'] == NUM_ITEMS**2
  payload = process.payload(state)
  target = similarity_alignment.SpectralTarget(
      payload['eigenvectors'], payload['eigenvalues'], payload['antisymmetric_sq_norm'])
  k = 2
  before = client_states[k]
  aligned, _ = similarity_alignment.align(
      before['item_embeddings'], target, steps=fedcia.DEFAULT_ALIGN_STEPS,
      learning_rate=fedcia.DEFAULT_ALIGN_LEARNING_RATE, weight_decay=TRAINING.weight_decay)
  no_alignment = build(align_steps=0)
  data = process_lib.client_data_values(clients, seed=0, round_num=ROUNDS + 1)[k]
  # With 0 alignment steps from the aligned table, the client trains exactly as the full client does.
  want = no_alignment.client_work(
      payload, dict(user_embeddings=before['user_embeddings'], item_embeddings=aligned.numpy()), data)
  got = process.client_work(payload, before, data)
  np.testing.assert_allclose(np.asarray(got.client_state['item_embeddings']),
                             np.asarray(want.client_state['item_embeddings']), rtol=1e-4, atol=1e-5)
  assert not np.allclose(aligned.numpy(), np.asarray(before['item_embeddings']), atol=1e-4)
  # Each client keeps its own tables; no two clients' item tables are the same.
  tables = [np.asarray(s['item_embeddings']) for s in client_states]
  assert not np.allclose(tables[0], tables[1])


def test_fedcia_scores_each_user_with_its_clients_private_item_table(planted_problem, fedcia_run):
  _, clients = planted_problem
  process, (state, client_states, _) = fedcia_run
  scores = process.scores(state, client_states, clients, NUM_USERS)
  user, k, row = 9, 2, 1  # client 2 holds users 8-11
  assert clients[k].user_ids[row] == user
  want = (np.asarray(client_states[k]['item_embeddings'])
          @ np.asarray(client_states[k]['user_embeddings'])[row])
  np.testing.assert_allclose(scores[user], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('option,value,message', [
    ('align_steps', -1, 'align_steps must be an integer >= 0, got -1'),
    ('align_learning_rate', 0.0, 'align_learning_rate must be a finite number > 0, got 0.0'),
    ('noise_scale', -0.1, 'noise_scale must be a finite number >= 0, got -0.1'),
])
def test_build_fedcia_refuses_bad_options_naming_them(option, value, message):
  with pytest.raises(ValueError, match=message):
    build(**{option: value})

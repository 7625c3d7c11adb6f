"""FedAlphaFuse on the planted two-community problem (Table 5; AlphaFuse's null-space ID embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.algorithms import fedalphafuse
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib

NUM_USERS, NUM_ITEMS, D, NULL_DIM = 32, 40, 8, 4  # the planted problem of conftest.py
# lr 0.2, not the other methods' 0.05: the standardised language part gives each of its axes unit
# variance, so the user vectors need larger steps to weigh the one community axis against the noise
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.2)


def test_language_part_is_centred_standardised_and_ordered_by_the_variance_it_explains(planted_text):
  text = planted_text
  language = fedalphafuse.language_part(text, embedding_dim=D)
  assert language.shape == (NUM_ITEMS, D) and language.dtype == np.float32
  np.testing.assert_allclose(language.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(language.var(axis=0, ddof=1), 1.0, rtol=1e-4)
  # the first axis is the principal one: it separates the two communities
  first = language[:, 0]
  assert abs(first[:20].mean() - first[20:].mean()) > 1.5


def test_language_part_without_standardisation_keeps_each_axis_variance_in_descending_order(planted_text):
  text = planted_text
  raw = fedalphafuse.language_part(text, embedding_dim=D, standardize=False)
  variances = raw.var(axis=0, ddof=1)
  assert (np.diff(variances) <= 1e-6).all() and variances[0] > 10 * variances[-1]
  np.testing.assert_allclose(raw / np.sqrt(variances),
                             fedalphafuse.language_part(text, embedding_dim=D), rtol=1e-3, atol=1e-4)


def test_language_part_refuses_a_width_above_the_language_embeddings_and_quotes_it(planted_text):
  with pytest.raises(ValueError, match=r'embedding_dim \(17\)'):
    fedalphafuse.language_part(planted_text, embedding_dim=17)


@pytest.mark.parametrize('options, quoted', [(dict(null_dim=0), 'null_dim'), (dict(null_dim=9), 'null_dim'),
                                             (dict(id_init='uniform'), "'uniform'")])
def test_bad_options_are_refused_and_quoted(planted_text, options, quoted):
  with pytest.raises(ValueError, match=quoted):
    fedalphafuse.build_fedalphafuse(num_items=NUM_ITEMS, language_embeddings=planted_text,
                                    embedding_dim=D, **{'null_dim': NULL_DIM, **options})


@pytest.fixture(scope='module')
def alphafuse_run(tff_context, planted_problem, planted_text):
  _, clients = planted_problem
  process = fedalphafuse.build_fedalphafuse(num_items=NUM_ITEMS, language_embeddings=planted_text,
                                            embedding_dim=D, null_dim=NULL_DIM, training=TRAINING,
                                            standardize=True)
  return process, process.run(clients, rounds=20)


def test_fedalphafuse_learns_the_communities(planted_problem, alphafuse_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = alphafuse_run
  assert history[-1]['loss'] < 0.6 * history[0]['loss']
  assert_learned_the_communities(process.scores(state, client_states, clients, NUM_USERS), split)


def test_only_the_null_space_id_table_is_shared_and_the_language_part_never_moves(alphafuse_run, planted_text):
  process, (state, _, _) = alphafuse_run
  ids = np.asarray(state['id_table'])
  assert ids.shape == (NUM_ITEMS, NULL_DIM) and np.abs(ids).max() > 0  # trained from zeros
  sizes = process.communication  # read from the round's types: the I x n table each way
  assert sizes['upload'] == sizes['download'] == NUM_ITEMS * NULL_DIM
  language = fedalphafuse.language_part(planted_text, embedding_dim=D)
  items = process.item_embeddings(state)
  np.testing.assert_array_equal(items[:, :D - NULL_DIM], language[:, :D - NULL_DIM])
  np.testing.assert_allclose(items[:, D - NULL_DIM:], language[:, D - NULL_DIM:] + ids, rtol=1e-6)


def test_the_server_table_is_the_weighted_mean_of_the_clients_id_tables(planted_problem, alphafuse_run):
  _, clients = planted_problem
  process, (state, client_states, _) = alphafuse_run
  data = process_lib.client_data_values(clients, seed=0, round_num=21)
  outputs = [process.client_work(process.payload(state), c, x) for c, x in zip(client_states, data)]
  weights = np.array([float(o.weight) for o in outputs])
  expected = np.average(np.stack([np.asarray(o.upload) for o in outputs]), axis=0, weights=weights)
  next_state, _, _ = process.next(state, client_states, data, round_num=21)
  np.testing.assert_allclose(np.asarray(next_state['id_table']), expected, rtol=1e-5, atol=1e-6)


def test_the_default_unstandardised_language_part_also_learns_the_communities(
    tff_context, planted_problem, planted_text, assert_learned_the_communities):
  split, clients = planted_problem
  process = fedalphafuse.build_fedalphafuse(num_items=NUM_ITEMS, language_embeddings=planted_text,
                                            embedding_dim=D, null_dim=NULL_DIM, training=TRAINING)
  state, client_states, _ = process.run(clients, rounds=20)
  assert_learned_the_communities(process.scores(state, client_states, clients, NUM_USERS), split)

"""GPFedRec (client relation graph, per-client targets) on the planted two-community problem."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import gpfedrec
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import gpfedrec_model

NUM_USERS, NUM_ITEMS, NUM_CLIENTS, D = 32, 40, 8, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.01)
HIDDEN = gpfedrec.DEFAULT_HIDDEN_UNITS
ROUNDS = 15


def build(**options):
  options = {'num_items': NUM_ITEMS, 'num_clients': NUM_CLIENTS, 'embedding_dim': D,
             'training': TRAINING, 'hidden_units': HIDDEN, **options}
  return gpfedrec.build_gpfedrec(**options)


@pytest.fixture(scope='module')
def gpfedrec_run(tff_context, planted_problem):
  _, clients = planted_problem
  process = build(seed=0)
  return process, process.run(clients, rounds=ROUNDS)


def test_gpfedrec_lowers_training_loss_and_beats_popularity_and_random_ranking(
    planted_problem, gpfedrec_run, assert_learned_the_communities):
  split, clients = planted_problem
  process, (state, client_states, history) = gpfedrec_run
  assert history[0]['bce'] == pytest.approx(np.log(2), abs=0.05)
  assert history[-1]['bce'] < 0.8 * history[0]['bce']
  assert all(m['loss'] >= m['bce'] for m in history)
  assert int(state['round_num']) == ROUNDS
  assert_learned_the_communities(process.scores(state, client_states, clients, NUM_USERS), split)


def _numpy_graph(tables, similarity, threshold):
  flat = tables.reshape(len(tables), -1).astype(np.float64)
  unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
  scores = unit @ unit.T
  if similarity == 'released_distance':
    scores = 1.0 - scores  # sklearn pairwise_distances(metric='cosine')
  graph = np.zeros_like(scores)
  limit = np.mean(scores) * threshold  # select_topk_neighboehood with neighborhood_size 0
  for i in range(len(scores)):
    above = scores[i] > limit
    if above.sum():
      graph[i, above] = 1.0 / above.sum()
    else:
      graph[i, i] = 1.0
  return graph


@pytest.mark.parametrize('similarity', gpfedrec.SIMILARITIES)
@pytest.mark.parametrize('threshold', [1.0, 1.3, 50.0])
def test_relation_graph_and_message_passing_follow_the_released_utils(similarity, threshold):
  rng = np.random.default_rng(0)
  base = rng.normal(size=(1, 5, 3))
  tables = (base + rng.normal(scale=[[[0.2]], [[0.3]], [[2.0]], [[0.1]], [[3.0]], [[0.5]]],
                              size=(6, 5, 3))).astype(np.float32)
  want = _numpy_graph(tables, similarity, threshold)
  got = gpfedrec.relation_graph(tables, similarity=similarity, threshold=threshold)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
  targets = tables.copy()
  global_items = gpfedrec.graph_targets(targets, got, layers=2)  # in place
  flat = tables.reshape(6, -1)
  np.testing.assert_allclose(targets.reshape(6, -1), want @ (want @ flat), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(global_items, targets.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_graph_targets_propagate_block_by_block_in_place(monkeypatch):
  rng = np.random.default_rng(3)
  tables = rng.normal(size=(5, 7, 3)).astype(np.float32)
  graph = gpfedrec.relation_graph(tables, similarity='cosine', threshold=0.5)
  monkeypatch.setattr(gpfedrec, 'PROPAGATION_BLOCK', 4)  # 21 columns: blocks of 4, 4, ..., 1
  targets = tables.copy()
  gpfedrec.graph_targets(targets, graph, layers=3)
  flat = tables.reshape(5, -1).astype(np.float64)
  np.testing.assert_allclose(targets.reshape(5, -1), graph @ graph @ graph @ flat, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match='in place'):
    gpfedrec.graph_targets(tables[:, ::2], graph, layers=1)  # not one contiguous array


def test_graph_differs_between_the_paper_similarity_and_the_released_distance():
  rng = np.random.default_rng(1)
  tables = rng.normal(size=(6, 5, 3)).astype(np.float32)
  cosine = gpfedrec.relation_graph(tables, similarity='cosine', threshold=1.0)
  distance = gpfedrec.relation_graph(tables, similarity='released_distance', threshold=1.0)
  assert np.all(np.diag(cosine) > 0)  # a client is its own most similar neighbour
  assert np.all(np.diag(distance) == 0)  # its distance to itself is 0: never above the mean
  assert not np.allclose(cosine, distance)


def _as_tensors(value):
  return tf.nest.map_structure(tf.constant, value)


def test_each_client_is_sent_its_own_target_and_the_server_builds_the_next_ones_from_every_upload(
    tff_context, planted_problem, gpfedrec_run):
  _, clients = planted_problem
  process, (state, client_states, _) = gpfedrec_run
  targets = np.asarray(state[process_lib.CLIENT_MESSAGES])
  assert targets.shape == (NUM_CLIENTS, NUM_ITEMS, D)
  assert not np.allclose(targets[0], targets[-1])  # the two communities' clients get different R_k
  np.testing.assert_allclose(state['global_items'], targets.mean(axis=0), rtol=1e-5, atol=1e-7)
  strong = build(reg=1e4)  # the regulariser dominates: a client's table moves toward its own R_k
  shared = np.asarray(strong.payload(state))
  np.testing.assert_array_equal(shared, state['global_items'])
  data = process_lib.client_data_values(clients, seed=0, round_num=ROUNDS + 1)
  next_state, next_client_states, _ = strong.next(state, client_states, data, round_num=ROUNDS + 1)
  # The same client work outside TFF, each client given its own target: the round's uploads.
  client_fn = tf.function(strong.client_fn)
  outputs = [client_fn(collections.OrderedDict(shared=shared, own=targets[k]),
                       _as_tensors(client_states[k]), dict(data[k])) for k in range(NUM_CLIENTS)]
  for k in (0, 5):
    np.testing.assert_allclose(next_client_states[k]['item_logits'],
                               outputs[k].client_state['item_logits'].numpy(), rtol=1e-4, atol=1e-5)
    wrong = client_fn(collections.OrderedDict(shared=shared, own=targets[7 - k]),
                      _as_tensors(client_states[k]), dict(data[k]))
    assert np.abs(outputs[k].upload.numpy() - wrong.upload.numpy()).max() > 1e-3
  uploads = np.stack([o.upload.numpy() for o in outputs])
  graph = _numpy_graph(uploads, 'cosine', gpfedrec.DEFAULT_THRESHOLD)
  want_targets = (graph @ uploads.reshape(NUM_CLIENTS, -1)).reshape(uploads.shape)
  np.testing.assert_allclose(next_state[process_lib.CLIENT_MESSAGES], want_targets, rtol=1e-3,
                             atol=1e-5)
  np.testing.assert_allclose(next_state['global_items'], want_targets.mean(axis=0), rtol=1e-3,
                             atol=1e-5)
  assert int(next_state['round_num']) == ROUNDS + 1
  # Each user's logits are its own MLP over the table its client trained and uploaded.
  user, k, row = 13, 3, 1  # client 3 holds users 12-15
  assert clients[k].user_ids[row] == user
  params = outputs[k].client_state['personal'].numpy()[row]
  np.testing.assert_allclose(next_client_states[k]['item_logits'][row],
                             _numpy_mlp(params, uploads[k]), rtol=1e-4, atol=1e-5)
  communication = strong.communication
  assert (communication['download'], communication['upload']) == (2 * NUM_ITEMS * D, NUM_ITEMS * D)


def test_every_client_starts_from_the_same_initial_table(tff_context, planted_problem):
  _, clients = planted_problem
  process = build(seed=3, init_scale=0.1)
  state = process.initialize()
  want = cw.initial_item_embeddings(NUM_ITEMS, embedding_dim=D, init_scale=0.1, seed=3)
  np.testing.assert_array_equal(state['global_items'], want)
  targets = state[process_lib.CLIENT_MESSAGES]
  assert targets.shape == (NUM_CLIENTS, NUM_ITEMS, D)
  for table in targets:  # views of one table, not K copies
    np.testing.assert_array_equal(table, want)
  assert int(state['round_num']) == 0
  personal = gpfedrec_model.initial_personal(clients[2].user_ids, embedding_dim=D,
                                             hidden_units=HIDDEN, init_scale=0.1, seed=3)
  first = process.initial_client_states(clients)[2]
  np.testing.assert_array_equal(first['personal'], personal)
  np.testing.assert_allclose(first['item_logits'][0], _numpy_mlp(personal[0], want), rtol=1e-4,
                             atol=1e-5)


def test_gpfedrec_scores_each_user_with_its_clients_logits(planted_problem, gpfedrec_run):
  _, clients = planted_problem
  process, (state, client_states, _) = gpfedrec_run
  scores = process.scores(state, client_states, clients, NUM_USERS)
  for client, client_state in zip(clients, client_states):
    np.testing.assert_array_equal(scores[client.user_ids], client_state['item_logits'])


def _numpy_mlp(params, items):
  """The released MLP.forward: relu layers over [p_u ; q_i], then affine_output (logits)."""
  sizes = [int(np.prod(s)) for s in gpfedrec_model.layer_shapes(D, HIDDEN)]
  parts = np.split(params, np.cumsum(sizes)[:-1])
  shapes = gpfedrec_model.layer_shapes(D, HIDDEN)
  parts = [p.reshape(s) for p, s in zip(parts, shapes)]
  hidden = np.concatenate([np.broadcast_to(parts[0], items.shape), items], axis=1)
  for kernel, bias in zip(parts[1:-2:2], parts[2:-2:2]):
    hidden = np.maximum(hidden @ kernel + bias, 0.0)
  return hidden @ parts[-2] + parts[-1][0]


def test_logits_of_several_users_equal_each_users_own_numpy_mlp():
  rng = np.random.default_rng(2)
  personal = gpfedrec_model.initial_personal(np.array([3, 9, 4]), embedding_dim=D,
                                             hidden_units=HIDDEN, init_scale=0.5, seed=0)
  assert personal.shape == (3, gpfedrec_model.personal_size(D, HIDDEN))
  items = rng.normal(size=(7, D)).astype(np.float32)
  positions = np.array([0, 2, 1, 1, 0, 2, 2], np.int32)
  got = gpfedrec_model.logits(personal, positions, items, embedding_dim=D,
                              hidden_units=HIDDEN).numpy()
  want = [_numpy_mlp(personal[p], items[b:b + 1])[0] for b, p in enumerate(positions)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_user_blocks_place_each_example_at_its_user_and_rank_among_that_users_examples():
  index, longest = gpfedrec_model.user_blocks(tf.constant([2, 0, 2, 2, 1, 0], tf.int32))
  np.testing.assert_array_equal(index.numpy(), [[2, 0], [0, 0], [2, 1], [2, 2], [1, 0], [0, 1]])
  assert int(longest) == 3


def test_an_empty_batch_gives_no_logits():
  personal = gpfedrec_model.initial_personal(np.arange(2), embedding_dim=D, hidden_units=HIDDEN,
                                             init_scale=0.1, seed=0)
  got = gpfedrec_model.logits(personal, tf.zeros([0], tf.int32), tf.zeros([0, D]), embedding_dim=D,
                              hidden_units=HIDDEN)
  assert got.shape == (0,)


def test_logit_gradients_equal_those_of_each_example_computed_alone():
  # The per-user layout pads each user's examples to the longest; padding must get no gradient.
  rng = np.random.default_rng(4)
  personal = tf.constant(gpfedrec_model.initial_personal(
      np.arange(3), embedding_dim=D, hidden_units=HIDDEN, init_scale=0.5, seed=1))
  items = tf.constant(rng.normal(size=(6, D)).astype(np.float32))
  positions = tf.constant([1, 1, 0, 1, 2, 1], tf.int32)
  weights = tf.constant(rng.normal(size=6).astype(np.float32))

  def gradients(compute):
    with tf.GradientTape() as tape:
      tape.watch([personal, items])
      loss = tf.reduce_sum(weights * compute())
    return [g.numpy() for g in tape.gradient(loss, [personal, items])]

  def batch():
    return gpfedrec_model.logits(personal, positions, items, embedding_dim=D, hidden_units=HIDDEN)

  def one_at_a_time():
    return tf.concat([gpfedrec_model.logits(personal, positions[b:b + 1], items[b:b + 1],
                                            embedding_dim=D, hidden_units=HIDDEN)
                      for b in range(6)], axis=0)

  for got, want in zip(gradients(batch), gradients(one_at_a_time)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_initial_personal_depends_on_the_user_not_the_partition():
  a = gpfedrec_model.initial_personal(np.array([5, 6]), embedding_dim=D, hidden_units=HIDDEN,
                                      init_scale=0.1, seed=0)
  b = gpfedrec_model.initial_personal(np.array([6]), embedding_dim=D, hidden_units=HIDDEN,
                                      init_scale=0.1, seed=0)
  np.testing.assert_array_equal(a[1], b[0])
  assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize('option,value,message', [
    ('num_clients', 0, 'num_clients must be an integer >= 1, got 0'),
    ('similarity', 'euclid', "similarity must be one of .*, got 'euclid'"),
    ('reg', -1.0, 'reg must be a finite number >= 0, got -1.0'),
    ('hidden_units', (), 'hidden_units must be one or more widths >= 1, got ()'),
])
def test_build_gpfedrec_refuses_bad_options_naming_them(option, value, message):
  with pytest.raises(ValueError, match=message):
    build(**{option: value})


@pytest.mark.parametrize('arrays_beside', [False, True], ids=['in-saved-model', 'arrays-beside'])
def test_a_run_over_client_shards_resumes_to_the_uninterrupted_runs_metrics(
    tmp_path, tff_context, planted_problem, monkeypatch, arrays_beside):
  # The server program's per-client targets (float32[K, I, d]) are saved with the program state:
  # here all in TFF's SavedModel, or (as GPFedRec's 3.2 GB with one user per client) as .npy beside it.
  from tff_rqfed import program_state
  from tff_rqfed import simulation
  if arrays_beside:
    monkeypatch.setattr(program_state, 'DEFAULT_MIN_BYTES', 0)
  split, clients = planted_problem

  def run(folder, rounds, resume=False):
    return simulation.run_simulation(
        build(seed=0), split=split, clients=clients, output_dir=tmp_path / folder,
        config=simulation.SimulationConfig(rounds=rounds, patience=10, checkpoint_every=2,
                                           client_shards=3, progress=False, resume=resume))

  whole = run('whole', rounds=4)
  run('resumed', rounds=2)
  assert bool(list((tmp_path / 'resumed' / simulation.PROGRAM_STATE_DIR).glob('arrays_2/*.npy'))) \
      == arrays_beside
  resumed = run('resumed', rounds=4, resume=True)
  assert resumed['resumed_from_round'] == 2 and resumed['rounds_run'] == whole['rounds_run'] == 4
  assert resumed['test'] == whole['test'] and resumed['valid'] == whole['valid']


def test_identical_tables_give_a_row_stochastic_graph_and_targets_equal_to_them():
  # Round 1: every client starts from the same table. The graph must still average
  # (rows summing to 1), so R_k is that table; the old in-worker graph came out all zeros here.
  table = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
  tables = np.repeat(table[np.newaxis], 6, axis=0)
  graph = gpfedrec.relation_graph(tables, similarity='cosine', threshold=1.0)
  np.testing.assert_allclose(graph.sum(axis=1), 1.0, rtol=1e-6)
  targets = tables.copy()
  global_items = gpfedrec.graph_targets(targets, graph, layers=1)
  np.testing.assert_allclose(targets, tables, rtol=1e-6)
  np.testing.assert_allclose(global_items, table, rtol=1e-6)

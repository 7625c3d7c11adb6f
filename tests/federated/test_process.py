"""Tests for tff_rqfed.federated.process: the federated round (Alg. 1) and what reaches the server."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.algorithms import (fedalphafuse, fedcia, fedmf, fedncf, fedrap, fedrlm, gpfedrec, mf_local,
                                  pfedrec, rqfedrec)
from tff_rqfed.data import partition
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import communication
from tff_rqfed.federated import process
from tff_rqfed.models import ncf
from tff_rqfed.models import rlm_alignment

D = 8
NUM_ITEMS = 40
NUM_CLIENTS = 3


def _trivial_round(aggregator=None):
  """A round whose clients upload [mean item, 2 * mean item, |D_k|] with weight |D_k|."""
  value_type = tff.TensorType(np.float32, [3])
  server_type = tff.StructType([('value', value_type)])
  client_type = tff.TensorType(np.float32, [None, 2])

  @tff.tensorflow.computation(server_type)
  def server_payload(state):
    return state['value']

  @tff.tensorflow.computation(value_type, client_type, process.client_data_type())
  def client_work(payload, client_state, data):
    mean_item = tf.reduce_mean(tf.cast(data['items'], tf.float32))
    size = tf.cast(tf.size(data['items']), tf.float32)
    upload = tf.stack([mean_item, 2.0 * mean_item, size]) + 0.0 * payload
    return process.ClientOutput(
        upload=upload, weight=cw.example_weight(data), client_state=client_state + 1.0,
        metrics=cw.metrics(mean_item=mean_item),
    )

  @tff.tensorflow.computation(server_type, value_type)
  def server_update(state, aggregate):
    del state
    return collections.OrderedDict(value=aggregate)

  return process.build_round_process(
      initial_state=collections.OrderedDict(value=np.zeros(3, np.float32)),
      server_state_type=server_type, client_state_type=client_type, server_payload=server_payload,
      client_work=client_work, server_update=server_update, aggregator=aggregator)


ITEMS_PER_CLIENT = [np.array([1, 3], np.int32), np.array([10, 20, 30, 40, 50], np.int32),
                    np.arange(100, 110, dtype=np.int32)]
MEANS, SIZES = np.array([2.0, 30.0, 104.5]), np.array([2.0, 5.0, 10.0])
UPLOADS = np.stack([MEANS, 2 * MEANS, SIZES], axis=1)


def _trivial_run(aggregator=None, rounds=1):
  iterative_process = _trivial_round(aggregator)
  data = [collections.OrderedDict(local_users=np.zeros(len(x), np.int32), items=x,
                                  seed=np.array([0, k], np.int32), client_index=np.int32(k),
                                  excluded_items=np.zeros(0, np.int32))
          for k, x in enumerate(ITEMS_PER_CLIENT)]
  states = [np.full((k + 1, 2), float(k), np.float32) for k in range(3)]
  server_state = iterative_process.initialize()
  for _ in range(rounds):
    server_state, states, metrics = iterative_process.next(server_state, states, data)
  return server_state, states, metrics


def test_codebook_mean_is_weighted_by_client_data_size(tff_context):
  server_state, client_states, metrics = _trivial_run()
  want = np.average(UPLOADS, axis=0, weights=SIZES)
  np.testing.assert_allclose(np.asarray(server_state['value']), want, rtol=1e-6)
  # (2*2 + 5*30 + 10*104.5) / 17, not the plain mean of the clients (45.5).
  assert np.asarray(server_state['value'])[0] == pytest.approx(1199.0 / 17.0, rel=1e-6)
  assert float(metrics['mean_item']) == pytest.approx(want[0], rel=1e-6)
  for k, state in enumerate(client_states):
    np.testing.assert_array_equal(np.asarray(state), np.full((k + 1, 2), k + 1.0, np.float32))


def test_an_unweighted_tff_aggregator_gives_the_plain_mean_of_the_uploads(tff_context):
  server_state, _, metrics = _trivial_run(tff.aggregators.UnweightedMeanFactory())
  np.testing.assert_allclose(np.asarray(server_state['value']), UPLOADS.mean(axis=0), rtol=1e-6)
  assert np.asarray(server_state['value'])[0] == pytest.approx(45.5, rel=1e-6)
  # Metrics stay weighted by |D_k| whatever aggregates the uploads.
  assert float(metrics['mean_item']) == pytest.approx(1199.0 / 17.0, rel=1e-6)


def test_a_stateful_tff_aggregator_keeps_its_state_in_the_server_state_across_rounds(tff_context):
  # TFF's DP aggregator (Gaussian, clip 1): uploads are clipped to L2 norm 1 and summed over the 3
  # clients of the round; noise 0 makes the result exact. Its DP query state rides in the server state.
  dp = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
      noise_multiplier=0.0, clients_per_round=3, clip=1.0)
  server_state, _, _ = _trivial_run(dp, rounds=2)
  clipped = UPLOADS / np.linalg.norm(UPLOADS, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(server_state['value']), clipped.mean(axis=0), rtol=1e-5)
  aggregator_state = server_state[process.AGGREGATOR_STATE]
  assert tf.nest.flatten(aggregator_state), 'the DP aggregator state was dropped'
  signature = _trivial_round(dp).next.type_signature
  assert signature.parameter[0].member[process.AGGREGATOR_STATE] == signature.result[0].member[
      process.AGGREGATOR_STATE]


def test_build_round_process_rejects_a_non_aggregator_and_an_aggregator_without_upload():
  with pytest.raises(TypeError, match='tff.aggregators aggregation factory.*mean'):
    _trivial_round('mean')
  with pytest.raises(ValueError, match='nothing is uploaded'):
    process.build_round_process(
        initial_state={}, server_state_type=tff.StructType([]), client_state_type=None,
        server_payload=None, client_work=None, server_update=None,
        aggregator=tff.aggregators.MeanFactory())


def test_client_data_values_give_each_client_and_round_its_own_seed():
  from tff_rqfed.data.partition import ClientData

  clients = [ClientData(np.array([0]), np.array([0, 0]), np.array([3, 4])),
             ClientData(np.array([1, 2]), np.array([1]), np.array([5]))]
  r1 = process.client_data_values(clients, seed=7, round_num=1)
  r2 = process.client_data_values(clients, seed=7, round_num=2)
  assert r1[0]['items'].dtype == np.int32 and r1[1]['local_users'].dtype == np.int32
  seeds = {tuple(v['seed']) for v in r1 + r2}
  assert len(seeds) == 4
  assert all(v['seed'][0] == 7 for v in r1 + r2)


def _server_leaves(type_spec, path=''):
  """{path: type string} of every SERVER-placed tensor in a TFF type (a round's signature)."""
  leaves = {}
  if isinstance(type_spec, tff.FunctionType):
    leaves.update(_server_leaves(type_spec.parameter, path))
    leaves.update(_server_leaves(type_spec.result, path))
  elif isinstance(type_spec, tff.FederatedType):
    if type_spec.placement is tff.SERVER:
      leaves.update(_leaves(type_spec.member, path))
  elif isinstance(type_spec, tff.StructType):
    for index, (name, member) in enumerate(tff.structure.iter_elements(type_spec)):
      leaves.update(_server_leaves(member, f'{path}/{name or index}'))
  return leaves


def _leaves(type_spec, path):
  if isinstance(type_spec, tff.StructType):
    leaves = {}
    for index, (name, member) in enumerate(tff.structure.iter_elements(type_spec)):
      leaves.update(_leaves(member, f'{path}/{name or index}'))
    return leaves
  return {path: str(type_spec)}


def _state_and_metrics(state, metrics):
  """The allow-list of a round: `state` in and out (parameter and result 0), `metrics` out."""
  allowed = {f'/server_state/{k}': v for k, v in state.items()}
  allowed.update({f'/0/{k}': v for k, v in state.items()})
  allowed.update({f'/2/{k}': 'float32' for k in metrics})
  return allowed


L, M = 2, 4
SERVER_ALLOW_LIST = {
    # FedCIA: the spectrum of the mean uploaded item-item similarity; the item tables stay private.
    'fedcia': _state_and_metrics(
        {'eigenvectors': f'float32[{NUM_ITEMS},{NUM_ITEMS}]', 'eigenvalues': f'float32[{NUM_ITEMS}]',
         'antisymmetric_sq_norm': 'float32', 'round_num': 'int32'}, ['loss', 'alignment_loss']),
    'fedmf': _state_and_metrics(
        {'item_embeddings': f'float32[{NUM_ITEMS},{D}]', 'round_num': 'int32'}, ['loss', 'clipped_rows']),
    'fedncf': _state_and_metrics(
        {'shared/items': f'float32[{NUM_ITEMS},{2 * D}]',
         **{f'shared/dense/{k}': f'float32[{",".join(map(str, shape))}]'
            for k, shape in enumerate(ncf.dense_shapes(D, fedncf.DEFAULT_HIDDEN_UNITS))},
         'round_num': 'int32'}, ['loss']),
    # GPFedRec's TFF server state is the global table; each client's target R_k enters the round
    # CLIENTS-placed, and the users' embeddings, MLPs and logits stay on the clients.
    'gpfedrec': _state_and_metrics(
        {'global_items': f'float32[{NUM_ITEMS},{D}]', 'round_num': 'int32'}, ['loss', 'bce']),
    'fedrap': _state_and_metrics(
        {'item_commonality': f'float32[{NUM_ITEMS},{D}]', 'round_num': 'int32'}, ['loss', 'bce']),
    'mf_local': _state_and_metrics({'round_num': 'int32'}, ['loss']),
    'fedalphafuse': _state_and_metrics(
        {'id_table': f'float32[{NUM_ITEMS},{D // 2}]', 'round_num': 'int32'}, ['loss']),
    # FedRLM: the item table and the projector (con) or decoder (gen); users and their profiles stay.
    **{f'fedrlm_{variant}': _state_and_metrics(
        {'shared/items': f'float32[{NUM_ITEMS},{D}]',
         **{f'shared/mlp/{k}': f'float32[{",".join(map(str, shape))}]' for k, shape in
            enumerate(rlm_alignment.mlp_shapes(variant, embedding_dim=D, profile_dim=16))},
         'round_num': 'int32'}, ['loss']) for variant in fedrlm.VARIANTS},
    'pfedrec': _state_and_metrics(
        {'item_embeddings': f'float32[{NUM_ITEMS},{D}]', 'round_num': 'int32'}, ['loss']),
    'rqfedrec': _state_and_metrics(
        {'codebooks': f'float32[2,{L},{M},{D}]', 'semantic_ids': f'int32[{NUM_ITEMS},{L}]',
         'collaborative_ids': f'int32[{NUM_ITEMS},{L}]', 'collaborative_rate': 'float32',
         'round_num': 'int32'},
        ['loss', 'code_loss_before', 'code_loss_after', 'changed_codes', 'fitted_items', 'clipped_rows']),
}


def _processes():
  text = np.random.default_rng(0).normal(size=(NUM_ITEMS, 16)).astype(np.float32)
  config = rqfedrec.RQConfig(levels=L, codes_per_level=M, kmeans_iterations=5)
  return {
      'fedalphafuse': fedalphafuse.build_fedalphafuse(num_items=NUM_ITEMS, language_embeddings=text,
                                                      embedding_dim=D, null_dim=D // 2),
      'fedcia': fedcia.build_fedcia(num_items=NUM_ITEMS, embedding_dim=D),
      'fedmf': fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D),
      'fedncf': fedncf.build_fedncf(num_items=NUM_ITEMS, embedding_dim=D),
      'fedrap': fedrap.build_fedrap(num_items=NUM_ITEMS, embedding_dim=D),
      **{f'fedrlm_{variant}': fedrlm.build_fedrlm(variant=variant, num_items=NUM_ITEMS,
                                                  profile_embeddings=text, embedding_dim=D)
         for variant in fedrlm.VARIANTS},
      'gpfedrec': gpfedrec.build_gpfedrec(num_items=NUM_ITEMS, num_clients=NUM_CLIENTS,
                                          embedding_dim=D),
      'mf_local': mf_local.build_mf_local(num_items=NUM_ITEMS, embedding_dim=D),
      'pfedrec': pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D),
      'rqfedrec': rqfedrec.build_rqfedrec(num_items=NUM_ITEMS, text_embeddings=text,
                                          embedding_dim=D, config=config),
  }


@pytest.fixture(scope='module')
def processes():
  return _processes()


@pytest.mark.parametrize('name', sorted(SERVER_ALLOW_LIST))
def test_server_placed_values_are_exactly_the_allow_listed_shared_state_and_metrics(processes, name):
  # Private state (user tables, personal item tables) is whatever is not on this list: any new
  # SERVER-placed tensor, renamed or reshaped one fails here until it is reviewed and listed.
  signature = processes[name].round_type_signature
  assert _server_leaves(signature) == SERVER_ALLOW_LIST[name]
  params, result = signature.parameter, signature.result
  assert [r.placement for r in result][:3] == [tff.SERVER, tff.CLIENTS, tff.SERVER]
  if processes[name].collect is None:
    assert [p.placement for p in params] == [tff.SERVER, tff.CLIENTS, tff.CLIENTS]
    assert len(result) == 3
  else:  # each client's own value comes in at CLIENTS; every upload goes to the program logic
    assert [p.placement for p in params] == [tff.SERVER, tff.CLIENTS, tff.CLIENTS, tff.CLIENTS]
    assert params[3].member == processes[name].broadcast_type.own
    assert len(result) == 4 and result[3].placement is tff.CLIENTS
    assert result[3].member == processes[name].upload_type
  client_state = _leaves(result[1].member, '')  # a user table: one row per user of the client
  assert params[1] == result[1] and any(t.startswith('float32[?,') for t in client_state.values())


@pytest.mark.parametrize('name', sorted(SERVER_ALLOW_LIST))
def test_a_client_shard_places_only_the_state_and_sums_of_uploads_and_metrics_at_the_server(processes, name):
  # The sharded round (federated.sharding) returns each shard's sums at SERVER instead of the mean:
  # the same uploads and metrics, weighted and added; nothing else may appear there.
  process = processes[name]
  signature = process.sharded_round.shard_computation.type_signature
  state = {k[len('/server_state'):]: v for k, v in SERVER_ALLOW_LIST[name].items()
           if k.startswith('/server_state/')}
  metrics = {k[len('/2'):]: v for k, v in SERVER_ALLOW_LIST[name].items() if k.startswith('/2/')}
  expected = {f'/state{k}': v for k, v in state.items()}
  expected.update({f'/0/metrics{k}': v for k, v in metrics.items()})
  expected['/0/metrics_weight'] = 'float32'
  if process.upload_type is not None and process.collect is None:  # a collecting shard: test_sharding
    expected.update(_leaves(process.upload_type, '/0/upload'))
    expected['/0/upload_weight'] = 'float32'
  assert _server_leaves(signature) == expected


def test_allow_list_check_catches_a_user_table_or_a_personal_item_table_at_server():
  state = tff.StructType([('item_embeddings', tff.TensorType(np.float32, [NUM_ITEMS, D]))])
  for leaked in (tff.TensorType(np.float32, [None, D]), tff.TensorType(np.float32, [NUM_ITEMS, D])):
    with_leak = tff.StructType([('item_embeddings', state.item_embeddings), ('private', leaked)])
    signature = tff.FunctionType(
        tff.StructType([('server_state', tff.FederatedType(with_leak, tff.SERVER))]),
        tff.StructType([tff.FederatedType(state, tff.SERVER)]))
    leaves = _server_leaves(signature)
    assert leaves['/server_state/private'] == str(leaked)
    assert leaves != {'/server_state/item_embeddings': f'float32[{NUM_ITEMS},{D}]'}
  # CLIENTS-placed values are not the server's.
  assert _server_leaves(tff.FederatedType(state, tff.CLIENTS)) == {}


@pytest.mark.parametrize('name', ['fedmf', 'rqfedrec'])
def test_client_fn_in_plain_tensorflow_equals_the_tff_client_work(tff_context, processes, name):
  # The round-speed benchmark times `client_fn` without TFF: it must be the same client work.
  proc = processes[name]
  state = proc.initialize()
  clients = [partition.ClientData(user_ids=np.array([0, 1], np.int32),
                                  local_users=np.array([0, 0, 1, 1, 1], np.int32),
                                  items=np.array([1, 4, 2, 4, 7], np.int32))]
  user_table = proc.initial_client_states(clients)[0]
  data = process.client_data_values(clients, seed=3, round_num=1)[0]
  payload = proc.payload(state)
  in_tff = proc.client_work(payload, user_table, data)
  plain = tf.function(proc.client_fn)(
      tf.nest.map_structure(tf.constant, payload), tf.constant(user_table),
      tf.nest.map_structure(tf.constant, dict(data)))
  np.testing.assert_allclose(np.asarray(plain.upload), np.asarray(in_tff.upload), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(plain.client_state), np.asarray(in_tff.client_state),
                             rtol=1e-5, atol=1e-6)
  assert float(plain.weight) == float(in_tff.weight) == 5.0
  assert not np.allclose(np.asarray(plain.client_state), user_table)  # it trained


def test_run_gives_the_rounds_of_next_with_the_seeded_client_data(tff_context, processes):
  proc = processes['fedmf']
  clients = [partition.ClientData(user_ids=np.array([0, 1], np.int32),
                                  local_users=np.array([0, 0, 1], np.int32),
                                  items=np.array([1, 4, 2], np.int32))]
  state, client_states, history = proc.run(clients, 2, seed=4)
  manual_state, manual_clients = proc.initialize(), proc.initial_client_states(clients)
  for t in (1, 2):
    data = process.client_data_values(clients, seed=4, round_num=t)
    manual_state, manual_clients, metrics = proc.next(manual_state, manual_clients, data, round_num=t)
    assert history[t - 1] == metrics
  np.testing.assert_array_equal(np.asarray(state['item_embeddings']),
                                np.asarray(manual_state['item_embeddings']))
  np.testing.assert_array_equal(np.asarray(client_states[0]), np.asarray(manual_clients[0]))
  assert int(state['round_num']) == 2

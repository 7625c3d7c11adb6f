"""Tests for tff_rqfed.federated.sharding: a round over client shards, and its shards on several workers."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_rqfed import execution
from tff_rqfed.algorithms import fedmf, gpfedrec, mf_local, pfedrec, rqfedrec
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.federated import sharding

NUM_ITEMS, D = 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


# name -> process builder, given the planted problem's text embeddings (conftest's `planted_text`).
BUILDERS = {
    'fedmf': lambda text: fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING, seed=0),
    # refresh every 2 rounds, so the 4 rounds below include two RQ-kmeans refreshes and lambda > 0
    'rqfedrec': lambda text: rqfedrec.build_rqfedrec(
        num_items=NUM_ITEMS, text_embeddings=text, embedding_dim=D, training=TRAINING,
        config=rqfedrec.RQConfig(levels=2, codes_per_level=4, refresh_every=2, warmup_rounds=2,
                                 kmeans_iterations=5), seed=0),
    'pfedrec': lambda text: pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING,
                                                  seed=0),
    'mf_local': lambda text: mf_local.build_mf_local(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING,
                                                     seed=0),
    # a collecting round: each shard takes its clients' own targets and returns their uploads
    'gpfedrec': lambda text: gpfedrec.build_gpfedrec(num_items=NUM_ITEMS, num_clients=8, embedding_dim=D,
                                                     training=TRAINING, seed=0),
}
ROUNDS = 4


def _arrays(structure):
  return [np.asarray(leaf) for leaf in tff.structure.flatten(tff.structure.from_container(structure, True))]


def _run(process, clients, **next_options):
  """(server state, client states, per-round metrics) after ROUNDS rounds."""
  state, client_states, history = process.initialize(), process.initial_client_states(clients), []
  for round_num in range(1, ROUNDS + 1):
    data = process_lib.client_data_values(clients, seed=0, round_num=round_num)
    state, client_states, metrics = process.next(state, client_states, data, round_num=round_num,
                                                 **next_options)
    history.append(metrics)
  return state, client_states, history


def test_shard_bounds_are_contiguous_balanced_and_cover_every_client():
  assert sharding.shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
  assert sharding.shard_bounds(8, 8) == [(k, k + 1) for k in range(8)]
  assert sharding.shard_bounds(5, 1) == [(0, 5)]


@pytest.mark.parametrize('clients, shards, quoted', [(5, 0, '0'), (3, 4, '(4)')])
def test_shard_bounds_reject_bad_counts_and_quote_them(clients, shards, quoted):
  with pytest.raises(ValueError, match=re.escape(quoted)):
    sharding.shard_bounds(clients, shards)


def test_only_a_plain_mean_can_be_split_over_shards():
  assert sharding.upload_weighting(None) is True
  assert sharding.upload_weighting(tff.aggregators.MeanFactory()) is True
  assert sharding.upload_weighting(tff.aggregators.UnweightedMeanFactory()) is False
  with pytest.raises(ValueError, match='SumFactory'):
    sharding.upload_weighting(tff.aggregators.SumFactory())
  with pytest.raises(ValueError, match='MeanFactory'):  # a mean over a DP sum is not a plain mean
    sharding.upload_weighting(tff.aggregators.MeanFactory(
        value_sum_factory=tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
            noise_multiplier=1.0, clients_per_round=2, clip=1.0)))


def test_combine_adds_the_shards_sums_and_divides_by_their_weights():
  shard_sums = [
      collections.OrderedDict(upload=np.array([2.0, 4.0], np.float32), upload_weight=np.float32(2.0),
                              metrics=collections.OrderedDict(loss=np.float32(1.0)),
                              metrics_weight=np.float32(2.0)),
      collections.OrderedDict(upload=np.array([9.0, 0.0], np.float32), upload_weight=np.float32(3.0),
                              metrics=collections.OrderedDict(loss=np.float32(6.0)),
                              metrics_weight=np.float32(3.0)),
  ]
  mean, metrics = sharding.combine(shard_sums)
  np.testing.assert_allclose(mean, [11.0 / 5.0, 4.0 / 5.0], rtol=1e-7)
  assert mean.dtype == np.float32
  assert metrics == {'loss': pytest.approx(7.0 / 5.0)}
  mean, _ = sharding.combine([{k: v for k, v in s.items() if 'upload' not in k} for s in shard_sums])
  assert mean is None  # a round without uploads (mf_local)


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_sharded_round_matches_the_one_computation_round_up_to_float_rounding(
    tff_context, planted_problem, planted_text, name):
  _, clients = planted_problem
  process = BUILDERS[name](planted_text)
  whole = _run(process, clients)
  sharded = _run(process, clients, shards=3)
  for key in whole[2][0]:
    np.testing.assert_allclose([m[key] for m in sharded[2]], [m[key] for m in whole[2]], rtol=1e-4,
                               atol=1e-6, err_msg=key)
  for got, want in zip(_arrays(sharded[0]), _arrays(whole[0])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert len(sharded[1]) == len(clients)
  for got, want in zip(_arrays(sharded[1]), _arrays(whole[1])):  # every client keeps its own state
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope='module')
def local_workers(tff_context):
  """count -> `execution.Workers` of that many local workers (started once per module)."""
  started = {}

  def get(count):
    if count not in started:
      started[count] = execution.local_workers(count, timeout_s=3.0)
    return started[count]

  yield get
  for workers in started.values():
    for worker in workers.processes:
      worker.kill()
      worker.wait()


@pytest.mark.parametrize('name, count', [('fedmf', 2), ('fedmf', 3), ('rqfedrec', 2), ('rqfedrec', 3),
                                         ('gpfedrec', 2)])
def test_shards_on_several_workers_give_exactly_the_results_of_one_worker(planted_problem, planted_text,
                                                                         local_workers, name, count):
  _, clients = planted_problem
  process = BUILDERS[name](planted_text)
  one_worker = _run(process, clients, shards=3)
  several = _run(process, clients, shards=3, workers=local_workers(count))
  assert several[2] == one_worker[2]
  for got, want in zip(_arrays(several[0]) + _arrays(several[1]),
                       _arrays(one_worker[0]) + _arrays(one_worker[1])):
    np.testing.assert_array_equal(got, want)


def test_workers_get_at_least_one_shard_each(planted_problem, planted_text, local_workers):
  _, clients = planted_problem
  process = BUILDERS['fedmf'](planted_text)
  # shards=1 with two workers runs two shards, as `shards=2` on one worker does
  assert _run(process, clients, workers=local_workers(2))[2] == _run(process, clients, shards=2)[2]


def test_a_collecting_shard_places_only_the_state_and_the_metric_sums_at_the_server(planted_text):
  signature = BUILDERS['gpfedrec'](planted_text).sharded_round.shard_computation.type_signature
  assert [p.placement for p in signature.parameter] == [tff.SERVER] + [tff.CLIENTS] * 3
  sums, client_states, uploads = signature.result
  assert sums.placement is tff.SERVER and [name for name, _ in tff.structure.iter_elements(
      sums.member)] == [sharding.METRICS, sharding.METRICS_WEIGHT]
  assert client_states.placement is tff.CLIENTS and uploads.placement is tff.CLIENTS
  assert uploads.member == tff.TensorType(np.float32, [NUM_ITEMS, D])

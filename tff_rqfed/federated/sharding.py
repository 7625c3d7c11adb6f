"""One round over client shards: each shard's weighted sums, combined into the round's mean.

`process.build_round_process` runs every client of a round in one TFF computation, so the worker
holds every client's upload at once before the mean (943 clients x a 1682 x 512 table: 3.2 GB per
copy, with one user per client) and the round can use one worker only. A *sharded* round splits the
clients into S contiguous shards and runs, per shard, the same broadcast and client work
followed by sums instead of the mean (`build_shard_computation`):

    payload = federated_broadcast(federated_map(server_payload, state))            SERVER -> CLIENTS
    out     = federated_map(client_work, (payload, client_states, client_data))         on CLIENTS
    sums    = federated_sum(w_k * upload_k), federated_sum(w_k),
              federated_sum(|D_k| * metrics_k), federated_sum(|D_k|)                 CLIENTS -> SERVER
    return sums, out.client_state

where w_k is `out.weight` (|D_k|, Eq. 8) for a weighted mean and 1 for an unweighted one. The server's
program logic adds the S shards' sums in shard order, divides (`combine`) and applies the algorithm's
`server_update`, a `tff.tensorflow.computation`. This is exactly what `tff.aggregators.MeanFactory`
and `UnweightedMeanFactory` compute, summed in another order: the results agree with the one-shard
round up to float rounding, and are identical to the bit for the same S whichever worker runs which
shard (`execution.Workers`), because the sums of each shard and their order do not depend on it.

Only a mean splits this way: an aggregator with state or other arithmetic (TFF's DP, compression or
secure aggregators) is refused. A round that collects every upload (GPFedRec,
`process.build_collecting_round_process`) splits too (`build_collecting_shard_computation`): each shard
takes its clients' own values at CLIENTS and returns its metrics' sums and its clients' uploads, which
the server's program logic gathers in the clients' order and hands to the algorithm's `collect`. TFF's own
answer, the mergeable-computation context (`tff.backends.native.create_mergeable_comp_execution_context`),
was not used: our round returns the clients' states, so its compiled form runs the client work twice,
and it returns CLIENTS-placed values in the order the shards finish (issue 11's measurements).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

# The sums one shard returns at SERVER. `upload`/`upload_weight` are absent without an upload (mf_local).
UPLOAD, UPLOAD_WEIGHT, METRICS, METRICS_WEIGHT = 'upload', 'upload_weight', 'metrics', 'metrics_weight'


def shard_bounds(num_clients: int, shards: int) -> list[tuple[int, int]]:
  """[start, stop) of `shards` contiguous, balanced shards of `num_clients` clients (sizes differ by
  at most one, larger first); an error names a bad count."""
  if shards < 1:
    raise ValueError(f'client shards must be >= 1, got {shards!r}')
  if shards > num_clients:
    raise ValueError(f'client shards ({shards}) must not exceed the clients of the round ({num_clients})')
  sizes = [num_clients // shards + (1 if s < num_clients % shards else 0) for s in range(shards)]
  starts = np.cumsum([0] + sizes)
  return [(int(starts[s]), int(starts[s + 1])) for s in range(shards)]


def upload_weighting(aggregator) -> bool:
  """Whether `aggregator` (None: TFF's default `MeanFactory`) is a weighted mean, for a sharded round.

  Raises ValueError for an aggregator whose result is not a plain mean of the uploads.
  """
  if aggregator is None:
    return True
  # A mean whose inner sums are plain sums (TFF's defaults; a DP or secure sum inside is not plain).
  # TFF keeps the inner factories in private attributes; read here only to refuse what cannot split.
  inner = [getattr(aggregator, name, None) for name in
           ('_value_sum_factory', '_weight_sum_factory', '_count_sum_factory')]
  # pylint: disable=unidiomatic-typecheck  (a subclass may aggregate differently)
  plain = all(f is None or type(f) is tff.aggregators.SumFactory for f in inner)
  if plain and type(aggregator) is tff.aggregators.MeanFactory:
    return True
  if plain and type(aggregator) is tff.aggregators.UnweightedMeanFactory:
    return False
  # pylint: enable=unidiomatic-typecheck
  raise ValueError(f'only a plain mean can be split over client shards, not {aggregator!r}: use one '
                   'client shard and one worker with this aggregator')


def _scale(value_type):
  @tff.tensorflow.computation(value_type, tff.TensorType(np.float32))
  def scale(value, weight):
    return tf.nest.map_structure(lambda v: v * tf.cast(weight, v.dtype), value)
  return scale


def build_shard_computation(*, server_state_type, client_state_type, client_data_type,
                            server_payload: tff.Computation, client_work: tff.Computation,
                            weighted: bool | None) -> tff.Computation:
  """One shard's round (module docstring): (state@SERVER, client_states@CLIENTS, client_data@CLIENTS)
  -> (sums@SERVER, client_states@CLIENTS). `weighted`: True for w_k = |D_k|, False for w_k = 1,
  None when the clients upload nothing (then the sums hold the metrics only)."""
  outputs_type = client_work.type_signature.result
  scale_metrics = _scale(outputs_type.metrics)
  scale_upload = None if weighted is None else _scale(outputs_type.upload)

  @tff.tensorflow.computation(tff.TensorType(np.float32))
  def one(weight):
    return tf.ones_like(weight)

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type, tff.CLIENTS),
  )
  def shard_fn(state, client_states, client_data):
    payload = tff.federated_broadcast(tff.federated_map(server_payload, state))
    outputs = tff.federated_map(client_work, (payload, client_states, client_data))
    sums = collections.OrderedDict()
    if weighted is not None:
      upload_weight = outputs.weight if weighted else tff.federated_map(one, outputs.weight)
      sums[UPLOAD] = tff.federated_sum(tff.federated_map(scale_upload, (outputs.upload, upload_weight)))
      sums[UPLOAD_WEIGHT] = tff.federated_sum(upload_weight)
    sums[METRICS] = tff.federated_sum(tff.federated_map(scale_metrics, (outputs.metrics, outputs.weight)))
    sums[METRICS_WEIGHT] = tff.federated_sum(outputs.weight)
    return tff.federated_zip(sums), outputs.client_state

  return shard_fn


def build_collecting_shard_computation(*, server_state_type, client_state_type, client_data_type,
                                      server_payload: tff.Computation, message_type,
                                      client_work: tff.Computation) -> tff.Computation:
  """One shard of a collecting round: (state@SERVER, client_states@CLIENTS, client_data@CLIENTS,
  messages@CLIENTS) -> (metric sums@SERVER, client_states@CLIENTS, uploads@CLIENTS), the round of
  `process.build_collecting_round_process` with the metrics summed instead of averaged."""
  scale_metrics = _scale(client_work.type_signature.result.metrics)

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type, tff.CLIENTS),
      tff.FederatedType(message_type, tff.CLIENTS),
  )
  def shard_fn(state, client_states, client_data, messages):
    shared = tff.federated_broadcast(tff.federated_map(server_payload, state))
    outputs = tff.federated_map(client_work, (shared, messages, client_states, client_data))
    sums = collections.OrderedDict()
    sums[METRICS] = tff.federated_sum(tff.federated_map(scale_metrics, (outputs.metrics, outputs.weight)))
    sums[METRICS_WEIGHT] = tff.federated_sum(outputs.weight)
    return tff.federated_zip(sums), outputs.client_state, outputs.upload

  return shard_fn


def combine(shard_sums: Sequence[Any]) -> tuple[Any, dict[str, float]]:
  """(the mean upload or None, the mean metrics) from the shards' sums, added in shard order in
  float32 (NumPy, so the order never depends on which worker ran a shard)."""
  def total(key):
    parts = [tf.nest.map_structure(np.asarray, dict(sums)[key]) for sums in shard_sums]
    return tf.nest.map_structure(lambda *values: _ordered_sum(values), *parts)

  first = dict(shard_sums[0])
  metric_sum, metric_weight = total(METRICS), total(METRICS_WEIGHT)
  metrics = {key: float(value / metric_weight) for key, value in dict(metric_sum).items()}
  if UPLOAD not in first:
    return None, metrics
  upload_weight = total(UPLOAD_WEIGHT)
  mean = tf.nest.map_structure(lambda v: (v / upload_weight).astype(v.dtype), total(UPLOAD))
  return mean, metrics


def _ordered_sum(values):
  result = np.array(values[0], copy=True)
  for value in values[1:]:
    result += value
  return result


@dataclasses.dataclass
class ShardedRound:
  """A round split over client shards (module docstring); `run` is `RecommenderProcess.next`'s
  sharded path.

  Attributes:
    shard_computation: `build_shard_computation`'s result.
    server_update: (algorithm state, mean upload) -> algorithm state, or None without an upload.
    algorithm_state: the round state -> the algorithm's fields (what the shards and the update see).
    with_algorithm_state: (round state, new algorithm fields) -> the next round state (the aggregator's
      state, which a plain mean does not change, carried over).
    client_messages: for a collecting round (`build_collecting_shard_computation`), round state ->
      float32[K, ...] each client's own value; None otherwise.
    collect: for a collecting round, (round state, uploads: list in the clients' order) -> the next
      round state; it may empty the list as it goes.
  """

  shard_computation: tff.Computation
  server_update: tff.Computation | None
  algorithm_state: Callable[[Any], Any]
  with_algorithm_state: Callable[[Any, Any], Any]
  client_messages: Callable[[Any], Any] | None = None
  collect: Callable[[Any, list], Any] | None = None

  def run(self, state, client_states: list, client_data: list, *, shards: int, workers):
    """One round over `shards` shards, their computations spread over `workers`
    (`execution.Workers`); returns (state, client_states in the clients' order, metrics dict)."""
    bounds = shard_bounds(len(client_data), shards)
    algorithm_state = self.algorithm_state(state)
    calls = [(algorithm_state, client_states[a:b], client_data[a:b]) for a, b in bounds]
    if self.client_messages is not None:
      messages = self.client_messages(state)
      calls = [call + (list(messages[a:b]),) for call, (a, b) in zip(calls, bounds)]
    results = workers.map(self.shard_computation, calls)
    mean, metrics = combine([result[0] for result in results])
    new_client_states = [client_state for result in results for client_state in result[1]]
    if self.collect is not None:
      uploads = [upload for result in results for upload in result[2]]
      results = calls = None  # the uploads' only reference is now the list `collect` may empty
      state = self.collect(state, uploads)
    elif self.server_update is not None:
      state = self.with_algorithm_state(state, self.server_update(algorithm_state, mean))
    return state, new_client_states, metrics

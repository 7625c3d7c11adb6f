"""One federated round composed from client work, aggregation and server update (Sec. 3.2, Alg. 1).

Every algorithm in tff-rqfed (mf_local, FedMF, RQFedRec) is the same TFF round

    payload      = federated_broadcast(federated_map(server_payload, state))        SERVER -> CLIENTS
    out          = federated_map(client_work, (payload, client_states, client_data))    on CLIENTS
    aggregate    = aggregator.next(out.upload, out.weight)                              CLIENTS -> SERVER
    state        = federated_map(server_update, (state, aggregate))                      on SERVER
    return state, out.client_state, federated_mean(out.metrics, weight=out.weight)

where `aggregator` is a `tff.aggregators` factory: by default `MeanFactory`, the mean weighted by |D_k|
(Eq. 8), so TFF's DP, compression and secure aggregators plug in as TFF users expect.

with clients that are *stateful*: `client_states` (the private user embeddings) enter as a CLIENTS-placed
value and leave as one; nothing derived from them is placed at SERVER except what `client_work` puts in
`upload` and `metrics`. The round is a `tff.templates.IterativeProcess` (`initialize`/`next`).

The same round can run over client shards, each shard's sums combined into the same mean, on one
or several TFF workers (`sharding`, `RecommenderProcess.next(shards=, workers=)`).

`RecommenderProcess` adds what TFF computations do not hold: server *program logic* that runs in this
Python process between rounds (RQFedRec's RQ-kmeans refresh of collaborative ids, Sec. 4.3.2, which can
use a GPU there), the initial client states, the item embeddings used for evaluation, and the
communication measured from the round's types.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import execution
from tff_rqfed.federated import communication
from tff_rqfed.federated import sharding

ClientOutput = collections.namedtuple('ClientOutput', ['upload', 'weight', 'client_state', 'metrics'])


def client_data_type():
  """TFF type of one client's data: positives, the round's stateless seed, the client's index in
  the list of clients (the key of a per-client server output, `build_collecting_round_process`) and
  the items no client trains on (cold items, never drawn as negatives; usually none)."""
  return tff.types.to_type(
      collections.OrderedDict(
          local_users=tff.TensorType(np.int32, [None]),
          items=tff.TensorType(np.int32, [None]),
          seed=tff.TensorType(np.int32, [2]),
          client_index=tff.TensorType(np.int32),
          excluded_items=tff.TensorType(np.int32, [None]),
      )
  )


def client_data_values(clients, *, seed: int, round_num: int, excluded_items=None,
                       client_indices=None) -> list[collections.OrderedDict]:
  """Per-client data for one round; the seed makes negatives and shuffles reproducible.

  `excluded_items` (int[C], e.g. `Split.cold_items`) are never drawn as a negative by any client.
  `client_indices` (int[len(clients)]) are the clients' indices among all clients when `clients` is a
  round's sample of them (`simulation`'s `client_fraction`); a client's seed and `client_index` depend
  on its index only, so a client's round is the same whichever other clients take part.
  """
  excluded = np.asarray([] if excluded_items is None else excluded_items, np.int32)
  indices = range(len(clients)) if client_indices is None else client_indices
  values = []
  for index, client in zip(indices, clients):
    values.append(
        collections.OrderedDict(
            local_users=client.local_users.astype(np.int32),
            items=client.items.astype(np.int32),
            seed=np.array([seed % (2**31 - 1), round_num * 100_003 + index], np.int32),
            client_index=np.int32(index),
            excluded_items=excluded,
        )
    )
  return values


def client_computation(client_fn: Callable, payload_type, client_state_type) -> tff.Computation:
  """`client_fn(payload, client_state, client_data) -> ClientOutput` as the clients'
  `tff.tensorflow.computation`; the same Python function runs in plain TensorFlow too (the round-speed
  benchmark times it without TFF)."""
  def client_work(payload, client_state, client_data):  # TFF wants exactly these three parameters
    return client_fn(payload, client_state, client_data)

  return tff.tensorflow.computation(payload_type, client_state_type, client_data_type())(client_work)


AGGREGATOR_STATE = 'aggregator'


def aggregation_process(aggregator, upload_type) -> tuple[tff.templates.AggregationProcess, bool]:
  """(the `AggregationProcess` of `aggregator` for `upload_type`, whether it takes client weights).

  `aggregator` is any `tff.aggregators` factory: weighted ones (`MeanFactory`, the default; DP,
  compression and secure aggregation compose into it) get each client's `weight`, unweighted ones
  (`UnweightedMeanFactory`, `SumFactory`, ...) the uploads alone.
  """
  if isinstance(aggregator, tff.aggregators.WeightedAggregationFactory):
    return aggregator.create(upload_type, tff.TensorType(np.float32)), True
  if isinstance(aggregator, tff.aggregators.UnweightedAggregationFactory):
    return aggregator.create(upload_type), False
  raise TypeError(f'aggregator must be a tff.aggregators aggregation factory, got {aggregator!r}')


def build_round_process(
    *,
    initial_state,
    server_state_type,
    client_state_type,
    server_payload: tff.Computation,
    client_work: tff.Computation,
    server_update: tff.Computation | None,
    aggregator=None,
) -> tff.templates.IterativeProcess:
  """The federated round (see module docstring) as a `tff.templates.IterativeProcess`.

  The process's server state is the algorithm's state (`server_state_type`, a named struct, starting
  at `initial_state`, a structure of NumPy arrays) plus the aggregator's state under
  `AGGREGATOR_STATE` (empty for a plain mean; a DP aggregator keeps its noise state there). The
  algorithm's computations see their own state only.

  Args:
    server_state_type: TFF type of the algorithm's server state (unplaced, named fields).
    client_state_type: TFF type of one client's private state (unplaced).
    server_payload: algorithm state -> what is broadcast.
    client_work: (payload, client_state, client_data) -> ClientOutput-like struct.
    server_update: (algorithm state, aggregated upload) -> algorithm state; None when nothing is
      uploaded (mf_local), and then there is no aggregator.
    aggregator: a `tff.aggregators` factory for the uploads; default `tff.aggregators.MeanFactory()`,
      the mean weighted by each client's `weight` (|D_k|, Eq. 8).
  """
  names = [name for name, _ in tff.structure.iter_elements(server_state_type)]
  if server_update is None:
    if aggregator is not None:
      raise ValueError('aggregator is set but server_update is None: nothing is uploaded to aggregate')
    return _build_process(initial_state, _round_without_upload(
        server_state_type, client_state_type, server_payload, client_work), None)
  if AGGREGATOR_STATE in names:
    raise ValueError(f'the server state may not have a field named {AGGREGATOR_STATE!r}: {names}')
  upload_type = client_work.type_signature.result.upload
  aggregation, weighted = aggregation_process(
      tff.aggregators.MeanFactory() if aggregator is None else aggregator, upload_type)
  round_state_type = tff.StructType(
      list(tff.structure.iter_elements(server_state_type))
      + [(AGGREGATOR_STATE, aggregation.state_type.member)])

  @tff.federated_computation(
      tff.FederatedType(round_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type(), tff.CLIENTS),
  )
  def round_fn(server_state, client_states, client_data):
    state = tff.federated_zip(collections.OrderedDict((n, server_state[n]) for n in names))
    payload = tff.federated_broadcast(tff.federated_map(server_payload, state))
    outputs = tff.federated_map(client_work, (payload, client_states, client_data))
    if weighted:
      aggregated = aggregation.next(server_state[AGGREGATOR_STATE], outputs.upload, outputs.weight)
    else:
      aggregated = aggregation.next(server_state[AGGREGATOR_STATE], outputs.upload)
    state = tff.federated_map(server_update, (state, aggregated.result))
    new_state = collections.OrderedDict((n, state[n]) for n in names)
    new_state[AGGREGATOR_STATE] = aggregated.state
    metrics = tff.federated_mean(outputs.metrics, weight=outputs.weight)
    return tff.federated_zip(new_state), outputs.client_state, metrics

  return _build_process(initial_state, round_fn, aggregation.initialize)


def _round_without_upload(server_state_type, client_state_type, server_payload, client_work):
  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type(), tff.CLIENTS),
  )
  def round_fn(server_state, client_states, client_data):
    payload = tff.federated_broadcast(tff.federated_map(server_payload, server_state))
    outputs = tff.federated_map(client_work, (payload, client_states, client_data))
    metrics = tff.federated_mean(outputs.metrics, weight=outputs.weight)
    return server_state, outputs.client_state, metrics

  return round_fn


def own_value_computation(client_fn: Callable, shared_type, own_type, client_state_type):
  """`client_fn(payload, client_state, client_data)` as the clients' computation of a collecting round:
  `payload` is OrderedDict(shared=the broadcast, own=the value the server sent this client alone)."""
  def client_work(shared, own, client_state, client_data):
    return client_fn(collections.OrderedDict(shared=shared, own=own), client_state, client_data)

  return tff.tensorflow.computation(shared_type, own_type, client_state_type,
                                    client_data_type())(client_work)


CLIENT_MESSAGES = 'client_messages'


def build_collecting_round_process(
    *,
    initial_state,
    server_state_type,
    client_state_type,
    server_payload: tff.Computation,
    message_type,
    client_work: tff.Computation,
) -> tff.templates.IterativeProcess:
  """A round whose server sends each client its own value and receives every client's upload.

      shared = federated_broadcast(federated_map(server_payload, state))             SERVER -> CLIENTS
      out    = federated_map(client_work, (shared, messages, client_states, client_data))
      return state, out.client_state, federated_mean(out.metrics, weight=out.weight), out.upload

  `messages` (CLIENTS-placed, `message_type` each) are what the server's program logic computed for
  each client after the previous round (`RecommenderProcess.collect`): a value that differs per client
  enters the round where it is used, at CLIENTS, so the K values never form one SERVER-placed tensor
  in the TFF worker. The uploads leave the round CLIENTS-placed, one per client, for that program
  logic, because a server that needs every client's upload (GPFedRec's client graph) has no TFF
  aggregation that keeps them apart at a usable cost in TFF 0.87: the runtime keeps every partial
  accumulator alive until the computation ends, so collecting K tables of 1682 x 512 into one SERVER
  value with `tff.federated_aggregate` grows as K^2 in worker memory (`benchmarks.tff_collect`: 7.3 GB
  peak for 50 clients against 1.9 GB for returning them CLIENTS-placed; 100 clients took 20-23 GB and
  were killed for memory on a 24 GB machine). Sending the K values down through `tff.federated_select`
  over a SERVER-placed float32[K, ...] (this round's earlier form) held that tensor, its K selected
  rows and the uploads in the worker at once: with one user per client on ML-100k (K = 943, d = 512)
  3.2 GB each.

  Args:
    server_payload: algorithm state -> what every client receives.
    message_type: TFF type of one client's own value.
    client_work: (shared, own, client_state, client_data) -> ClientOutput-like
      (`own_value_computation`).
  """

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type(), tff.CLIENTS),
      tff.FederatedType(message_type, tff.CLIENTS),
  )
  def round_fn(server_state, client_states, client_data, messages):
    shared = tff.federated_broadcast(tff.federated_map(server_payload, server_state))
    outputs = tff.federated_map(client_work, (shared, messages, client_states, client_data))
    metrics = tff.federated_mean(outputs.metrics, weight=outputs.weight)
    return server_state, outputs.client_state, metrics, outputs.upload

  return _build_process(initial_state, round_fn, None)


def _build_process(initial_state, round_fn: tff.Computation,
                   aggregator_initialize: tff.Computation | None) -> tff.templates.IterativeProcess:
  """Wraps a round into `initialize`/`next`.

  `initial_state` is a structure of NumPy arrays, or of zero-argument functions that build a tensor
  inside the computation: a value over TensorFlow's 2 GB graph-constant limit (GPFedRec's K copies of
  the initial table on the larger datasets) must be built, not embedded.
  """

  @tff.tensorflow.computation
  def initial():
    return tf.nest.map_structure(lambda v: v() if callable(v) else tf.constant(v), initial_state)

  @tff.federated_computation
  def initialize():
    state = tff.federated_eval(initial, tff.SERVER)
    if aggregator_initialize is None:
      return state
    fields = collections.OrderedDict((name, state[name]) for name in initial_state)
    fields[AGGREGATOR_STATE] = aggregator_initialize()
    return tff.federated_zip(fields)

  return tff.templates.IterativeProcess(initialize, round_fn)


@dataclasses.dataclass(frozen=True)
class SharedValueServer:
  """The server of FedAvg over one shared value: state `OrderedDict(<name>=value, round_num=int32)`,
  `server_payload` broadcasts the value, `server_update` replaces it by the clients' mean and counts
  the round (FedMF's item table, FedNCF's and FedRLM's tables and MLPs, ...)."""

  state_type: Any
  server_payload: tff.Computation
  server_update: tff.Computation


def shared_value_server(name: str, value_type) -> SharedValueServer:
  """`SharedValueServer` for a shared value of TFF type `value_type` stored under `name`."""
  state_type = tff.types.to_type(collections.OrderedDict(
      [(name, value_type), ('round_num', tff.TensorType(np.int32))]))

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    return state[name]

  @tff.tensorflow.computation(state_type, value_type)
  def server_update(state, mean_value):
    return collections.OrderedDict([(name, mean_value), ('round_num', state['round_num'] + 1)])

  return SharedValueServer(state_type, server_payload, server_update)


def build_recommender_process(
    *,
    name: str,
    initial_state,
    server_state_type,
    client_state_type,
    server_payload: tff.Computation,
    client_fn: Callable[..., ClientOutput],
    server_update: tff.Computation | None,
    initial_client_states: Callable[..., list],
    scores: Callable[..., np.ndarray],
    aggregator=None,
    after_round: Callable[..., tuple[Any, dict]] | None = None,
    item_embeddings: Callable[..., np.ndarray] | None = None,
) -> 'RecommenderProcess':
  """A `RecommenderProcess` from an algorithm's named pieces.

  The clients' computation is `client_fn` over what `server_payload` broadcasts
  (`client_computation`), the round is `build_round_process` (see it for the arguments), and the
  communicated types are read from the two: the broadcast is `server_payload`'s result, the upload
  the client work's `upload` (none without a `server_update`).
  """
  broadcast_type = server_payload.type_signature.result
  client_work = client_computation(client_fn, broadcast_type, client_state_type)

  def build_sharded_round() -> sharding.ShardedRound:
    weighted = None if server_update is None else sharding.upload_weighting(aggregator)
    return sharding.ShardedRound(
        shard_computation=sharding.build_shard_computation(
            server_state_type=server_state_type, client_state_type=client_state_type,
            client_data_type=client_data_type(), server_payload=server_payload,
            client_work=client_work, weighted=weighted),
        server_update=server_update,
        algorithm_state=algorithm_state if server_update is not None else lambda state: state,
        with_algorithm_state=_with_algorithm_state)

  return RecommenderProcess(
      name=name,
      iterative_process=build_round_process(
          initial_state=initial_state, server_state_type=server_state_type,
          client_state_type=client_state_type, server_payload=server_payload,
          client_work=client_work, server_update=server_update, aggregator=aggregator),
      client_work=client_work,
      client_fn=client_fn,
      server_payload=server_payload,
      initial_client_states=initial_client_states,
      scores=scores,
      broadcast_type=broadcast_type,
      upload_type=None if server_update is None else client_work.type_signature.result.upload,
      after_round=after_round,
      item_embeddings=item_embeddings,
      build_sharded_round=build_sharded_round,
  )


def build_collecting_recommender_process(
    *,
    name: str,
    initial_state,
    server_state_type,
    client_state_type,
    server_payload: tff.Computation,
    message_type,
    initial_messages: Callable[[], np.ndarray],
    client_fn: Callable[..., ClientOutput],
    collect: Callable[..., Any],
    initial_client_states: Callable[..., list],
    scores: Callable[..., np.ndarray],
) -> 'RecommenderProcess':
  """A `RecommenderProcess` over `build_collecting_round_process`: each client gets its own value
  beside the broadcast `shared`, and `collect(state, uploads: list) -> state` is the server's update
  from every client's upload (program logic between rounds), which also computes the next round's
  per-client values.

  The process's state is the TFF server state plus `CLIENT_MESSAGES`: float32[K, ...] (a NumPy array
  of the server program, row k for client k; `initial_messages()` before round 1), passed to the round
  as its CLIENTS-placed `messages`.

  The communicated types: down, the broadcast and the client's own value; up, the upload.
  """
  shared_type = server_payload.type_signature.result
  message_type = tff.types.to_type(message_type)
  client_work = own_value_computation(client_fn, shared_type, message_type, client_state_type)

  def build_sharded_round() -> sharding.ShardedRound:
    return sharding.ShardedRound(
        shard_computation=sharding.build_collecting_shard_computation(
            server_state_type=server_state_type, client_state_type=client_state_type,
            client_data_type=client_data_type(), server_payload=server_payload,
            message_type=message_type, client_work=client_work),
        server_update=None, algorithm_state=algorithm_state, with_algorithm_state=_with_algorithm_state,
        client_messages=lambda state: state[CLIENT_MESSAGES], collect=collect)

  return RecommenderProcess(
      name=name,
      iterative_process=build_collecting_round_process(
          initial_state=initial_state, server_state_type=server_state_type,
          client_state_type=client_state_type, server_payload=server_payload,
          message_type=message_type, client_work=client_work),
      client_work=client_work,
      client_fn=client_fn,
      server_payload=server_payload,
      initial_client_states=initial_client_states,
      scores=scores,
      broadcast_type=tff.StructType([('shared', shared_type), ('own', message_type)]),
      upload_type=client_work.type_signature.result.upload,
      collect=collect,
      initial_messages=initial_messages,
      build_sharded_round=build_sharded_round,
  )


def algorithm_state(state) -> collections.OrderedDict:
  """The algorithm's fields of a round's server state: without the aggregator's state and a collecting
  round's per-client values (`CLIENT_MESSAGES`), which the TFF server state does not hold."""
  return collections.OrderedDict((k, v) for k, v in dict(state).items()
                                 if k not in (AGGREGATOR_STATE, CLIENT_MESSAGES))


def _with_algorithm_state(state, algorithm_fields) -> collections.OrderedDict:
  """`state` with its algorithm's fields replaced by `algorithm_fields` (the aggregator's state kept)."""
  new_state = collections.OrderedDict(dict(algorithm_fields))
  if AGGREGATOR_STATE in dict(state):
    new_state[AGGREGATOR_STATE] = dict(state)[AGGREGATOR_STATE]
  return new_state


@dataclasses.dataclass
class RecommenderProcess:
  """A federated recommender: the TFF process plus server program logic and evaluation hooks.

  Attributes:
    name: algorithm name.
    iterative_process: the pure-TFF `initialize`/`next` over one round.
    client_work: the clients' `tff.tensorflow.computation` (inspected for communication).
    client_fn: the Python function `client_work` was traced from, (payload, client_state, data) ->
      ClientOutput, for running the same client work outside TFF (benchmarks).
    server_payload: the `tff.tensorflow.computation` algorithm state -> broadcast payload (`payload`
      applies it to a round's state).
    initial_client_states: (clients, seed) -> list of initial private client states.
    scores: (state, client_states, clients, num_users) -> float32[U, I] scores of every user: each
      user's own embedding against the item embeddings that user's client holds (evaluation only).
    after_round: server program logic run between rounds, (state, round_num) -> (state, info dict).
    upload_type, broadcast_type: TFF types of what crosses the network.
    collect: for a round that returns every client's upload (`build_collecting_round_process`), the
      server's update from them, (state, uploads: list) -> state, run before `after_round`; it may
      empty `uploads` as it goes (each table freed once read).
    initial_messages: for a collecting round, () -> float32[K, ...] the per-client values of round 1
      (`CLIENT_MESSAGES` of the state).
    item_embeddings: state -> float32[I, d], the global item table the server can form (FedMF's
      table; RQFedRec's Eq. 9 reconstruction from the codebooks), or None (Fig. 4's tracking).
    build_sharded_round: () -> `sharding.ShardedRound`, the same round over client shards (`next`
      with `shards` > 1 or several workers), or None where the round cannot be split. Built on
      first use.
  """

  name: str
  iterative_process: tff.templates.IterativeProcess
  client_work: tff.Computation
  client_fn: Callable[..., ClientOutput]
  server_payload: tff.Computation
  initial_client_states: Callable[..., list]
  scores: Callable[..., np.ndarray]
  broadcast_type: Any
  upload_type: Any
  after_round: Callable[..., tuple[Any, dict]] | None = None
  collect: Callable[..., Any] | None = None
  item_embeddings: Callable[..., np.ndarray] | None = None
  build_sharded_round: Callable[[], sharding.ShardedRound] | None = None
  initial_messages: Callable[[], np.ndarray] | None = None
  _sharded_round: sharding.ShardedRound | None = dataclasses.field(default=None, init=False, repr=False)

  def initialize(self):
    state = self.iterative_process.initialize()
    if self.initial_messages is None:
      return state
    state = collections.OrderedDict(dict(state))
    state[CLIENT_MESSAGES] = self.initial_messages()
    return state

  def payload(self, state):
    """What round `state` broadcasts: `server_payload` of the algorithm's part of the state."""
    return self.server_payload(algorithm_state(state))

  def next(self, state, client_states, client_data, *, round_num: int, shards: int = 1,
           workers: execution.Workers | None = None):
    """Runs round `round_num` (1-based); returns (state, client_states, metrics dict).

    With `shards` > 1 or `workers` given, the round runs over that many client shards
    (`sharding.ShardedRound`, at least one per worker), each on one of `workers`.
    """
    state, client_states, metrics = self.federated_round(state, client_states, client_data,
                                                         shards=shards, workers=workers)
    if self.after_round is not None:
      state, info = self.after_round(state, round_num)
      metrics.update(info)
    return state, client_states, metrics

  def federated_round(self, state, client_states, client_data, *, shards: int = 1,
                      workers: execution.Workers | None = None):
    """`next` without the server program logic between rounds (`after_round`): the TFF round, or its
    client shards on `workers`, and a collecting round's `collect`; (state, client_states, metrics)."""
    if self.collect is not None and shards == 1 and workers is None:
      outputs = self.iterative_process.next(algorithm_state(state), client_states, client_data,
                                            list(state[CLIENT_MESSAGES]))
      _, client_states, metrics = outputs[:3]
      uploads, outputs = list(outputs[3]), None  # `collect` may free each upload once read
      state = self.collect(state, uploads)
    elif shards == 1 and workers is None:
      state, client_states, metrics = self.iterative_process.next(state, client_states, client_data)
    else:
      workers = workers or execution.Workers()
      state, client_states, metrics = self.sharded_round.run(
          state, client_states, client_data, shards=max(shards, workers.count), workers=workers)
    return state, list(client_states), {key: float(value) for key, value in dict(metrics).items()}

  @property
  def sharded_round(self) -> sharding.ShardedRound:
    """The round over client shards (built on first use); a ValueError names a round that cannot be
    split."""
    if self._sharded_round is None:
      if self.build_sharded_round is None:
        raise ValueError(f'{self.name} cannot run over client shards or several workers')
      self._sharded_round = self.build_sharded_round()
    return self._sharded_round

  def run(self, clients, rounds: int, *, seed: int = 0):
    """Rounds 1..`rounds` from the initial state, without evaluation (`simulation.run_simulation`
    adds validation and early stopping): (state, client_states, per-round metrics)."""
    state, client_states = self.initialize(), self.initial_client_states(clients)
    history = []
    for round_num in range(1, rounds + 1):
      data = client_data_values(clients, seed=seed, round_num=round_num)
      state, client_states, metrics = self.next(state, client_states, data, round_num=round_num)
      history.append(metrics)
    return state, client_states, history

  @property
  def communication(self) -> dict[str, int]:
    return communication.measure(broadcast_type=self.broadcast_type, upload_type=self.upload_type)

  @property
  def round_type_signature(self):
    return self.iterative_process.next.type_signature

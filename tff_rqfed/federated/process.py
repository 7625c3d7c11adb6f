"""One federated round composed from client work, aggregation and server update (Sec. 3.2, Alg. 1).

Every algorithm in tff-rqfed (mf_local, FedMF, RQFedRec) is the same TFF round

    payload      = federated_broadcast(federated_map(server_payload, state))        SERVER -> CLIENTS
    out          = federated_map(client_work, (payload, client_states, client_data))    on CLIENTS
    aggregate    = federated_mean(out.upload, weight=out.weight)                        CLIENTS -> SERVER
    state        = federated_map(server_update, (state, aggregate))                      on SERVER
    return state, out.client_state, federated_mean(out.metrics, weight=out.weight)

with clients that are *stateful*: `client_states` (the private user embeddings) enter as a CLIENTS-placed
value and leave as one; nothing derived from them is placed at SERVER except what `client_work` puts in
`upload` and `metrics`. The round is a `tff.templates.IterativeProcess` (`initialize`/`next`).

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

from tff_rqfed.federated import communication

ClientOutput = collections.namedtuple('ClientOutput', ['upload', 'weight', 'client_state', 'metrics'])


def client_data_type():
  """TFF type of one client's data: positives and the round's stateless seed."""
  return tff.types.to_type(
      collections.OrderedDict(
          local_users=tff.TensorType(np.int32, [None]),
          items=tff.TensorType(np.int32, [None]),
          seed=tff.TensorType(np.int32, [2]),
      )
  )


def client_data_values(clients, *, seed: int, round_num: int) -> list[collections.OrderedDict]:
  """Per-client data for one round; the seed makes negatives and shuffles reproducible."""
  values = []
  for index, client in enumerate(clients):
    values.append(
        collections.OrderedDict(
            local_users=client.local_users.astype(np.int32),
            items=client.items.astype(np.int32),
            seed=np.array([seed % (2**31 - 1), round_num * 100_003 + index], np.int32),
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


def build_round(
    *,
    server_state_type,
    client_state_type,
    server_payload: tff.Computation,
    client_work: tff.Computation,
    server_update: tff.Computation | None,
) -> tff.Computation:
  """The federated round (see module docstring) as a `tff.federated_computation`.

  Args:
    server_state_type: TFF type of the server state (unplaced).
    client_state_type: TFF type of one client's private state (unplaced).
    server_payload: state -> what is broadcast.
    client_work: (payload, client_state, client_data) -> ClientOutput-like struct.
    server_update: (state, mean upload) -> state; None when nothing is uploaded (mf_local).
  """

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_state_type, tff.CLIENTS),
      tff.FederatedType(client_data_type(), tff.CLIENTS),
  )
  def round_fn(server_state, client_states, client_data):
    payload = tff.federated_broadcast(tff.federated_map(server_payload, server_state))
    outputs = tff.federated_map(client_work, (payload, client_states, client_data))
    if server_update is not None:
      aggregate = tff.federated_mean(outputs.upload, weight=outputs.weight)
      server_state = tff.federated_map(server_update, (server_state, aggregate))
    metrics = tff.federated_mean(outputs.metrics, weight=outputs.weight)
    return server_state, outputs.client_state, metrics

  return round_fn


def build_iterative_process(initial_state, round_fn: tff.Computation) -> tff.templates.IterativeProcess:
  """Wraps a round into `initialize`/`next`; `initial_state` is a structure of NumPy arrays."""

  @tff.tensorflow.computation
  def initial():
    return tf.nest.map_structure(tf.constant, initial_state)

  @tff.federated_computation
  def initialize():
    return tff.federated_eval(initial, tff.SERVER)

  return tff.templates.IterativeProcess(initialize, round_fn)


@dataclasses.dataclass
class RecommenderProcess:
  """A federated recommender: the TFF process plus server program logic and evaluation hooks.

  Attributes:
    name: algorithm name.
    iterative_process: the pure-TFF `initialize`/`next` over one round.
    client_work: the clients' `tff.tensorflow.computation` (inspected for communication).
    client_fn: the Python function `client_work` was traced from, (payload, client_state, data) ->
      ClientOutput, for running the same client work outside TFF (benchmarks).
    server_payload: the `tff.tensorflow.computation` state -> broadcast payload.
    initial_client_states: (clients, seed) -> list of initial private client states.
    scores: (state, client_states, clients, num_users) -> float32[U, I] scores of every user: each
      user's own embedding against the item embeddings that user's client holds (evaluation only).
    after_round: server program logic run between rounds, (state, round_num) -> (state, info dict).
    upload_type, broadcast_type: TFF types of what crosses the network.
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

  def initialize(self):
    return self.iterative_process.initialize()

  def next(self, state, client_states, client_data, *, round_num: int):
    """Runs round `round_num` (1-based); returns (state, client_states, metrics dict)."""
    state, client_states, metrics = self.iterative_process.next(state, client_states, client_data)
    metrics = {key: float(value) for key, value in dict(metrics).items()}
    if self.after_round is not None:
      state, info = self.after_round(state, round_num)
      metrics.update(info)
    return state, list(client_states), metrics

  @property
  def communication(self) -> dict[str, int]:
    return communication.measure(broadcast_type=self.broadcast_type, upload_type=self.upload_type)

  @property
  def round_type_signature(self):
    return self.iterative_process.next.type_signature

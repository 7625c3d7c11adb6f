"""mf_local: matrix factorisation with no aggregation (the "MF, No Aggregation" column of Table 2).

Every client keeps both its user embeddings and its own item table `float32[I, d]` as private state and
trains them on its positives each round (Eq. 3); nothing but the training loss reaches the server. It is
built from the same round as FedMF with no upload and no server update.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import mf


def client_update(round_num, client_state, data, *, training: cw.LocalTraining):
  """Local MF client: Eq. 3 on its private users and item table; uploads nothing."""
  del round_num
  items = client_state['item_embeddings']
  rows, coefficients = mf.identity_parameterisation(tf.shape(items)[0])
  users, items, loss, _ = cw.train_on_items(
      client_state['user_embeddings'], items, rows, coefficients, data, training,
  )
  return process.ClientOutput(
      upload=(), weight=cw.example_weight(data),
      client_state=collections.OrderedDict(user_embeddings=users, item_embeddings=items),
      metrics=cw.metrics(loss=loss),
  )


def build_mf_local(
    *,
    num_items: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
) -> process.RecommenderProcess:
  """Builds local-only MF as a `RecommenderProcess`."""
  client_state_type = cw.private_tables_type(num_items, embedding_dim)
  state_type = tff.types.to_type(collections.OrderedDict(round_num=tff.TensorType(np.int32)))

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    return state['round_num']

  client_fn = functools.partial(client_update, training=training)

  def initial_client_states(clients):
    return cw.initial_private_tables(clients, num_items=num_items, embedding_dim=embedding_dim,
                                     init_scale=init_scale, seed=seed)

  def scores(state, client_states, clients, num_users):
    del state
    return cw.private_table_scores(client_states, clients, num_users, num_items)

  return process.build_recommender_process(
      name='mf_local', initial_state=collections.OrderedDict(round_num=np.int32(0)),
      server_state_type=state_type, client_state_type=client_state_type,
      server_payload=server_payload, client_fn=client_fn, server_update=None,
      initial_client_states=initial_client_states, scores=scores)

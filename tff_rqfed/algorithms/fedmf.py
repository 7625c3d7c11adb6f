"""FedMF: ID-indexed federated matrix factorisation (Chai et al. 2020; Sec. 3.2 and Table 2 of the paper).

Each round the server broadcasts the item table `float32[I, d]`, every client trains its private user
embeddings and the table on its positives (Eq. 3), uploads the whole table, and the server takes the
`tff.federated_mean` weighted by |D_k| (FedAvg). This is the ID-indexed paradigm RQFedRec replaces; it
is also the `w/o C` ablation of Fig. 3.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import devices
from tff_rqfed import random_streams
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import privacy
from tff_rqfed.federated import process
from tff_rqfed.models import mf


def client_update(item_embeddings, user_embeddings, data, *, training: cw.LocalTraining,
                  laplace_scale: float = 0.0, laplace_clip: float = 0.0):
  """FedMF client: Eq. 3 on the broadcast table `float32[I, d]`; uploads the whole trained table,
  perturbed as RQFedRec's (Eq. 11, rows clipped to L1 `laplace_clip`) when `laplace_scale` > 0."""
  rows, coefficients = mf.identity_parameterisation(tf.shape(item_embeddings)[0])
  users, items, loss, _ = cw.train_on_items(
      user_embeddings, item_embeddings, rows, coefficients, data, training
  )
  clipped = tf.constant(0.0)
  if laplace_scale > 0:
    noise_seed = random_streams.stream_seed(data['seed'], random_streams.LAPLACE_NOISE)
    items, clipped = privacy.perturb_item_table(items, scale=laplace_scale, clip=laplace_clip,
                                                seed=noise_seed)
  return process.ClientOutput(
      upload=items, weight=cw.example_weight(data), client_state=users,
      metrics=cw.metrics(loss=loss, clipped_rows=clipped),
  )


def build_fedmf(
    *,
    num_items: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    laplace_scale: float = 0.0,
    laplace_clip: float = 0.0,
) -> process.RecommenderProcess:
  """Builds FedMF as a `RecommenderProcess` over a TFF `initialize`/`next`.

  `laplace_scale` and `laplace_clip` perturb each upload as Eq. 11 does RQFedRec's item table
  (`federated.privacy.perturb_item_table`): the baseline of the privacy comparison (issue 10).
  """
  cw.check_non_negative('laplace_scale', laplace_scale)
  cw.check_non_negative('laplace_clip', laplace_clip)
  item_type = tff.TensorType(np.float32, [num_items, embedding_dim])
  user_type = cw.user_state_type(embedding_dim)
  server = process.shared_value_server('item_embeddings', item_type)
  client_fn = functools.partial(client_update, training=training, laplace_scale=laplace_scale,
                                laplace_clip=laplace_clip)

  initial_state = collections.OrderedDict(
      item_embeddings=cw.initial_item_embeddings(
          num_items, embedding_dim=embedding_dim, init_scale=init_scale, seed=seed
      ),
      round_num=np.int32(0),
  )

  def initial_client_states(clients):
    return cw.initial_user_embeddings(
        clients, embedding_dim=embedding_dim, init_scale=init_scale, seed=seed
    )

  def scores(state, client_states, clients, num_users):
    users = cw.stack_users(client_states, clients, num_users, embedding_dim)
    return devices.score_matrix(users, np.asarray(state['item_embeddings']))

  return process.build_recommender_process(
      name='fedmf', initial_state=initial_state, server_state_type=server.state_type,
      client_state_type=user_type, server_payload=server.server_payload, client_fn=client_fn,
      server_update=server.server_update, initial_client_states=initial_client_states, scores=scores,
      item_embeddings=lambda state: np.asarray(state['item_embeddings']))

"""FedNCF: federated NeuMF (Perifanis & Efraimidis 2022; a baseline of Table 2 of the paper).

FedNCF's authors published no code. We follow the federated NCF of the FedCIA repository
(`Mingzhe-Han/FedCIA`: `model/NCF.py` for the model, `flalgorithm/fedavg.py` for the round), which the
paper's baselines come from: every round the server broadcasts the item GMF and MLP tables and the
MLP and output layers; each client trains its private user embeddings and everything shared on its
positives and sampled negatives; the server takes the mean of the shared parameters weighted by |D_k|
(`client_upload`: the sum of `state_dict()[k] * trainnum` over clients, divided by their total). The
user GMF and MLP embeddings stay on the client (`'user' not in k` in `server_paramname`).

Adaptations to our protocol (each one for the same footing as FedMF and RQFedRec):
- Loss: BCE over each positive and `num_negatives` sampled negatives, averaged over the batch
  (`mf.epoch_examples`). FedCIA draws one negative per positive and averages the positive and negative
  BCE terms (`NCF.loss`).
- Optimiser: Adam, lazy (row-sparse) on the embedding tables as for FedMF, dense on the MLP and output
  layers, with moments reset every round. FedCIA keeps one dense `torch.optim.Adam` per client alive
  across rounds.
- Embeddings are initialised N(0, init_scale^2), as FedCIA does with std 0.1, and the linear layers as
  PyTorch's `nn.Linear` (`ncf.initial_dense_weights`).
- Tower: FedCIA ships no NCF configuration; `hidden_units` defaults to one layer of 32, the tower of its
  ML-100k MLP configuration (`config/ml100k_all/fedmlp.ini`: `hidden_units = 32`). At d = 512 the first
  layer costs 2d x 32 multiply-adds per example; a (128, 64) tower made a round 19 s, mostly this layer.
- Communication: upload and download are the two item tables plus the dense weights,
  2 I d + |MLP| values per client per round (`process.RecommenderProcess.communication`).
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import ncf

DEFAULT_HIDDEN_UNITS = (32,)


def client_update(shared, user_embeddings, data, *, training: cw.LocalTraining):
  """One client's round: NeuMF on its positives; uploads every shared parameter.

  Args:
    shared: the broadcast, OrderedDict(items=float32[I, 2d] (GMF ; MLP), dense=[weights]).
    user_embeddings: float32[U_k, 2d] the client's private (GMF ; MLP) user embeddings.
    data: the client's positives and seed (`process.client_data_type`).
  """
  users, items, dense, loss = ncf.train_local(
      user_embeddings, shared['items'], list(shared['dense']), data['local_users'], data['items'],
      data['seed'], epochs=training.epochs, batch_size=training.batch_size,
      num_negatives=training.num_negatives, learning_rate=training.learning_rate,
      weight_decay=training.weight_decay, excluded_items=data['excluded_items'])
  return process.ClientOutput(
      upload=collections.OrderedDict(items=items, dense=dense), weight=cw.example_weight(data),
      client_state=users, metrics=cw.metrics(loss=loss))


def build_fedncf(
    *,
    num_items: int,
    embedding_dim: int = 512,
    hidden_units=DEFAULT_HIDDEN_UNITS,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
) -> process.RecommenderProcess:
  """Builds FedNCF as a `RecommenderProcess` (weighted-mean aggregation of all shared parameters)."""
  hidden_units = tuple(int(units) for units in hidden_units)
  if not hidden_units or min(hidden_units) < 1:
    raise ValueError(f'hidden_units must be one or more positive layer widths, got {hidden_units!r}')
  d = embedding_dim
  dense_types = [tff.TensorType(np.float32, shape) for shape in ncf.dense_shapes(d, hidden_units)]
  shared_type = tff.types.to_type(collections.OrderedDict(
      items=tff.TensorType(np.float32, [num_items, 2 * d]), dense=dense_types))
  server = process.shared_value_server('shared', shared_type)
  user_type = cw.user_state_type(2 * d)
  client_fn = functools.partial(client_update, training=training)

  items0 = cw.initial_item_embeddings(num_items, embedding_dim=2 * d, init_scale=init_scale, seed=seed)
  initial_state = collections.OrderedDict(
      shared=collections.OrderedDict(
          items=items0, dense=ncf.initial_dense_weights(d, hidden_units, seed=seed)),
      round_num=np.int32(0))

  def initial_client_states(clients):
    return cw.initial_user_embeddings(clients, embedding_dim=2 * d, init_scale=init_scale, seed=seed)

  def scores(state, client_states, clients, num_users):
    users = cw.stack_users(client_states, clients, num_users, 2 * d)
    return neumf_scores(users, state['shared'])

  return process.build_recommender_process(
      name='fedncf', initial_state=initial_state, server_state_type=server.state_type,
      client_state_type=user_type, server_payload=server.server_payload, client_fn=client_fn,
      server_update=server.server_update, initial_client_states=initial_client_states, scores=scores)


def neumf_scores(users: np.ndarray, shared, *, users_per_chunk: int = 64) -> np.ndarray:
  """float32[U, I] NeuMF logits of every user for every item (evaluation).

  The first MLP layer of a pair is W [p_u ; q_i] + b = (W_u p_u) + (W_i q_i + b), so it is computed once
  per user and once per item instead of once per pair (the same logits, without the 2d x h_1 product
  for each of the U x I pairs); chunks of users bound the [users x items x h_1] activations.
  """
  items = tf.constant(np.asarray(shared['items']))
  dense = [tf.constant(np.asarray(w)) for w in shared['dense']]
  d = items.shape[1] // 2
  num_items = items.shape[0]
  item_gmf = items[:, :d]
  item_first = tf.matmul(items[:, d:], dense[0][d:]) + dense[1]  # [I, h_1]
  out_kernel, out_bias = dense[-2], dense[-1]
  rows = []
  for start in range(0, users.shape[0], users_per_chunk):
    chunk = tf.constant(users[start:start + users_per_chunk])
    gmf = tf.matmul(chunk[:, :d], item_gmf * tf.transpose(out_kernel[:d]), transpose_b=True)  # [u, I]
    hidden = tf.nn.relu(tf.matmul(chunk[:, d:], dense[0][:d])[:, None, :] + item_first[None])
    for layer in range(1, len(dense) // 2 - 1):
      hidden = tf.nn.relu(tf.einsum('uih,hk->uik', hidden, dense[2 * layer]) + dense[2 * layer + 1])
    mlp = tf.einsum('uih,h->ui', hidden, out_kernel[d:, 0])
    rows.append((gmf + mlp + out_bias[0]).numpy())
  return np.concatenate(rows, axis=0)

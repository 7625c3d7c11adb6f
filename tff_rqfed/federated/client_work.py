"""Client-side pieces shared by every algorithm: private state and the local MF step (Sec. 3.2, Eq. 3).

A client owns the embeddings of its users (`user_embeddings: float32[U_k, d]`, never uploaded) and its
training positives. `train_on_items` is the common local step: it trains the user table and an item
parameterisation on the client's data with the options every algorithm shares (`LocalTraining`).
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.models import mf


@dataclasses.dataclass(frozen=True)
class LocalTraining:
  """Local optimisation options shared by all algorithms (Sec. 6.1.4: Adam, lr and weight decay grid)."""

  epochs: int = 1
  batch_size: int = 256
  num_negatives: int = 4
  learning_rate: float = 0.01
  weight_decay: float = 0.0

  def __post_init__(self):
    for name in ('epochs', 'batch_size', 'num_negatives'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)!r}')
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate!r}')
    if self.weight_decay < 0:
      raise ValueError(f'weight_decay must be >= 0, got {self.weight_decay!r}')


def check_positive(name: str, value) -> None:
  """Refuses an option that must be a finite number > 0, quoting its name and value."""
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}')


def check_non_negative(name: str, value) -> None:
  """Refuses an option that must be a finite number >= 0, quoting its name and value."""
  if not (value >= 0 and math.isfinite(value)):
    raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')


def check_table_options(*, num_items, embedding_dim, init_scale) -> None:
  """The options every baseline's `build_*` shares: item count, d and the initialisation scale."""
  if num_items < 1:
    raise ValueError(f'num_items must be >= 1, got {num_items!r}')
  if embedding_dim < 1:
    raise ValueError(f'embedding_dim must be >= 1, got {embedding_dim!r}')
  check_positive('init_scale', init_scale)


def user_state_type(embedding_dim: int):
  """TFF type of a client's private user table (its row count varies by client)."""
  return tff.TensorType(np.float32, [None, embedding_dim])


def initial_user_embeddings(clients, *, embedding_dim: int, init_scale: float, seed: int) -> list[np.ndarray]:
  """float32[U_k, d] per client, N(0, init_scale^2), drawn from (seed, global user index) so a user's
  initial vector does not depend on how users are partitioned into clients."""
  tables = []
  for client in clients:
    rows = [
        np.random.default_rng([seed, 1, int(user)]).normal(0.0, init_scale, embedding_dim)
        for user in client.user_ids
    ]
    tables.append(np.asarray(rows, np.float32).reshape(-1, embedding_dim))
  return tables


def initial_score_functions(clients, *, embedding_dim: int, init_scale: float,
                            seed: int) -> list[np.ndarray]:
  """float32[U_k, d + 1] per client: a private score function (weight ; bias) per user, as PFedRec's
  and FedRAP's `affine_output`; weights N(0, init_scale^2) from (seed, 7, global user), so a user's
  start does not depend on the partition, bias 0."""
  tables = []
  for client in clients:
    table = np.zeros((len(client.user_ids), embedding_dim + 1), np.float32)
    for row, user in enumerate(client.user_ids):
      rng = np.random.default_rng([seed, 7, int(user)])
      table[row, :embedding_dim] = rng.normal(0.0, init_scale, embedding_dim)
    tables.append(table)
  return tables


def initial_item_embeddings(num_items: int, *, embedding_dim: int, init_scale: float, seed: int) -> np.ndarray:
  """float32[I, d] N(0, init_scale^2) item table."""
  return np.random.default_rng([seed, 2]).normal(0.0, init_scale, (num_items, embedding_dim)).astype(np.float32)


def private_tables_type(num_items: int, embedding_dim: int):
  """TFF type of a client that keeps its own item table too (mf_local, FedCIA):
  OrderedDict(user_embeddings=float32[U_k, d], item_embeddings=float32[I, d])."""
  return tff.types.to_type(collections.OrderedDict(
      user_embeddings=user_state_type(embedding_dim),
      item_embeddings=tff.TensorType(np.float32, [num_items, embedding_dim])))


def initial_private_tables(clients, *, num_items: int, embedding_dim: int, init_scale: float,
                           seed: int) -> list[collections.OrderedDict]:
  """`private_tables_type` values: each client's users as `initial_user_embeddings`, and its own
  copy of the initial item table `initial_item_embeddings`."""
  items = initial_item_embeddings(num_items, embedding_dim=embedding_dim, init_scale=init_scale,
                                  seed=seed)
  users = initial_user_embeddings(clients, embedding_dim=embedding_dim, init_scale=init_scale,
                                  seed=seed)
  return [collections.OrderedDict(user_embeddings=u, item_embeddings=items.copy()) for u in users]


def private_table_scores(client_states, clients, num_users: int, num_items: int) -> np.ndarray:
  """float32[U, I]: every user's embedding against its own client's item table (`private_tables_type`
  states; evaluation only)."""
  result = np.zeros((num_users, num_items), np.float32)
  for state, client in zip(client_states, clients):
    result[client.user_ids] = (np.asarray(state['user_embeddings'])
                               @ np.asarray(state['item_embeddings']).T)
  return result


def train_on_items(user_embeddings, params, rows, coefficients, data, training: LocalTraining,
                   item_offsets=None):
  """Eq. 3 on one client: returns (user_embeddings, params, loss, trained_items: bool[I]).
  `item_offsets`: frozen item vectors added to the parameterised ones (`mf.train_local`)."""
  return mf.train_local(
      user_embeddings, params, rows, coefficients,
      data['local_users'], data['items'], data['seed'],
      epochs=training.epochs, batch_size=training.batch_size,
      num_negatives=training.num_negatives, learning_rate=training.learning_rate,
      weight_decay=training.weight_decay, excluded_items=data.get('excluded_items'),
      item_offsets=item_offsets,
  )


def example_weight(data):
  """|D_k| as float32: the weight of Eq. 8 and of FedAvg."""
  return tf.cast(tf.size(data['items']), tf.float32)


def metrics(**values):
  return collections.OrderedDict((key, tf.cast(value, tf.float32)) for key, value in values.items())


def stack_users(client_states, clients, num_users: int, embedding_dim: int) -> np.ndarray:
  """float32[U, d] assembled from the clients' per-user rows, float32[U_k, d] each, client k's row j
  for its j-th user (evaluation only): a user table, or every user's logits over all I items (d = I,
  `item_logits` of PFedRec's and GPFedRec's client states)."""
  users = np.zeros((num_users, embedding_dim), np.float32)
  for state, client in zip(client_states, clients):
    users[client.user_ids] = np.asarray(state)
  return users

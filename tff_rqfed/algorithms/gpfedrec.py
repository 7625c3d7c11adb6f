"""GPFedRec: graph-guided personalisation for federated recommendation (a baseline of Tables 2 and 3).

Zhang et al., 2024, "GPFedRec: Graph-Guided Personalization for Federated Recommendation"; official
code `Zhangcx19/GPFedRec` (`mlp.py` model, `engine.py` round and evaluation, `utils.py` graph,
`train.py` options). Each user has a private user embedding and MLP over a shared item table
(`models.gpfedrec_model`). Every round each client starts from the server's global table, trains with
the regulariser reg * MSE(item table, R_k) toward its own graph-aggregated table R_k, and uploads its
trained table E_k. The server builds a relation graph over the clients from the cosine similarity of
their flattened tables (`construct_user_relation_graph_via_item`), keeps for each client the clients
whose similarity exceeds `threshold` x the mean of the whole graph, each with weight 1/(their number)
(a self-loop alone if none: `select_topk_neighboehood` with `neighborhood_size` 0), propagates the
tables over it `layers` times (`MP_on_graph`): R = G^layers E, and sends each client R_k (the target of
its next regulariser) and every client the mean of the R_k (its next starting table). Evaluation
(`fed_evaluate`) scores each user with its own parameters and its client's last trained table.

The released code's graph is `sklearn.metrics.pairwise_distances(metric='cosine')`, the cosine
DISTANCE 1 - cos, used as if it were a similarity (neighbours are the clients above the mean distance,
so the least similar ones). `similarity='cosine'` (the default) is the paper's cosine similarity;
`similarity='released_distance'` keeps the released behaviour.

The TFF round (`process.build_collecting_round_process`): the global table is broadcast, and R_k
reaches client k as the round's CLIENTS-placed `messages` (row k of the server program's
`client_messages: float32[K, I, d]`); the uploads return CLIENTS-placed, and the server's program logic
(`collect`, between rounds, in NumPy) builds the graph from them, R and the next global table. So the K
tables never form one SERVER-placed tensor in the TFF worker: with one user per client on ML-100k
(K = 943, d = 512) each such copy is 3.2 GB. `collect` copies the uploads into one buffer, freeing
each as it goes, and propagates over the graph in place, column block by column block (R = G E mixes
rows only), so the server program holds two such copies at its peak (the previous round's R and the
new one). Each client keeps its users' logits over all items with the table it trained
(`item_logits`, as `pfedrec` does): evaluation needs the trained tables only through them.

Adaptations to our protocol (each one for the same footing as FedMF and RQFedRec):
- Clients: 100 clients of several users each; each user keeps its own embedding and MLP inside the
  client (`personal: float32[U_k, P]`), the client keeps one item table shared by its users, and the
  graph is over clients. With `--partition=per_user` this is the published setting.
- Model width: d = 512 for the user and item embeddings; the MLP's hidden layers default to
  (32, 16, 8), the last three of the released (64, 32, 16, 8) for d = 32 (its first layer is the 2d
  concatenation): a user's parameters are then 34k values (the released 1024-wide first layer would be
  an MLP of 655k values per user).
- Optimiser: Adam (lazy, row-sparse, `mf.row_sparse_adam`) on the touched item rows and the batch's
  users' parameters, one learning rate `training.learning_rate` and weight decay for both, moments
  reset every round. The released optimisers are SGD with lr 0.1 for the MLP,
  lr / sample_ratio * lr_eta - lr for the user embedding and lr * num_items * lr_eta - lr for the items
  (lr_eta = 80): factors that size SGD's steps and have no direct counterpart under Adam. The
  regulariser is applied to the rows a batch touches (see `models.gpfedrec_model`); `reg` (1.0) as
  released.
- Loss: BCE over each positive and `training.num_negatives` sampled negatives (`mf.epoch_examples`),
  `training.epochs` local epochs of `training.batch_size`, as FedMF (released: 4 negatives, 1 epoch,
  batch 256). The reported `loss` is BCE + reg * MSE, `bce` the BCE alone.
- Initialisation: item table and user embeddings N(0, init_scale^2); MLP layers torch's Linear default.
  In round 1 every R_k and the global table are the initial table (the released code's round 0).
- Evaluation: each user's logits with the table its client trained in the last round, kept by the
  client (the released `fed_evaluate` scores with the client's stored table).
- Every client takes part in every round (the released default `clients_sample_ratio` = 1). The
  released `dp` option (Laplace noise on the uploads, 0 by default) is not implemented.
- Communication per client per round: the global table and R_k down (2 I d), E_k up (I d).
"""

from __future__ import annotations

import collections
import functools
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import gpfedrec_model

DEFAULT_HIDDEN_UNITS = (32, 16, 8)
DEFAULT_REG = 1.0  # train.py --reg
DEFAULT_THRESHOLD = 1.0  # train.py --neighborhood_threshold
DEFAULT_LAYERS = 1  # train.py --mp_layers
SIMILARITIES = ('cosine', 'released_distance')


def cosine_similarity(flat_tables: np.ndarray) -> np.ndarray:
  """float64[K, K] cosine similarity of the rows of `flat_tables: float32[K, n]` (one Gram product, no
  normalised copy of the tables)."""
  gram = (flat_tables @ flat_tables.T).astype(np.float64)
  norms = np.sqrt(np.maximum(np.diag(gram), 1e-30))
  return gram / np.outer(norms, norms)


def relation_graph(tables: np.ndarray, *, similarity: str, threshold: float) -> np.ndarray:
  """float32[K, K] row-normalised client graph from `tables: float32[K, ...]` (see module docstring).

  Client j is a neighbour of k when sim(k, j) > threshold * mean(sim); each neighbour weighs
  1 / (k's number of neighbours); a client with none keeps itself with weight 1.
  """
  cosine = cosine_similarity(tables.reshape(len(tables), -1))
  scores = cosine if similarity == 'cosine' else np.maximum(1.0 - cosine, 0.0)
  above = (scores > threshold * scores.mean()).astype(np.float64)
  count = above.sum(axis=1, keepdims=True)
  alone = np.eye(len(scores)) * (count == 0)
  return (above / np.maximum(count, 1.0) + alone).astype(np.float32)


PROPAGATION_BLOCK = 1 << 16  # columns of the flattened tables propagated at a time


def graph_targets(tables: np.ndarray, graph: np.ndarray, *, layers: int) -> np.ndarray:
  """R = graph^layers tables, written over `tables: float32[K, ...]` (a writable array), block of
  columns by block (R mixes rows only, so a block of K x 65,536 values is the only extra memory);
  returns the global table mean_k R_k: float32[...]."""
  flat = tables.reshape(len(tables), -1)
  if not np.shares_memory(flat, tables):
    raise ValueError('graph_targets propagates in place: tables must be one contiguous array')
  for start in range(0, flat.shape[1], PROPAGATION_BLOCK):
    block = flat[:, start:start + PROPAGATION_BLOCK]
    for _ in range(layers):
      block = graph @ block
    flat[:, start:start + PROPAGATION_BLOCK] = block
  return tables.mean(axis=0)


def client_update(payload, client_state, data, *, training: cw.LocalTraining,
                  hidden_units: tuple[int, ...], reg: float):
  """One GPFedRec client round: train from the global table toward R_k; upload the trained table.

  Args:
    payload: OrderedDict(shared=float32[I, d] the global table, own=float32[I, d] R_k).
    client_state: OrderedDict(personal=float32[U_k, P] the private user embeddings and MLPs
      (`gpfedrec_model`), item_logits=float32[U_k, I] their logits with the client's last table).
    data: the client's positives and seed (`process.client_data_type`).
  """
  d = payload['shared'].shape[1]
  personal, items, loss, bce = gpfedrec_model.train_local(
      client_state['personal'], payload['shared'], payload['own'], data['local_users'], data['items'],
      data['seed'], hidden_units=hidden_units, reg=reg, epochs=training.epochs,
      batch_size=training.batch_size, num_negatives=training.num_negatives,
      learning_rate=training.learning_rate, weight_decay=training.weight_decay,
      excluded_items=data['excluded_items'])
  logits = gpfedrec_model.item_logits(personal, items, embedding_dim=d, hidden_units=hidden_units)
  return process.ClientOutput(
      upload=items, weight=cw.example_weight(data),
      client_state=collections.OrderedDict(personal=personal, item_logits=logits),
      metrics=cw.metrics(loss=loss, bce=bce))


def _validate(num_items, num_clients, embedding_dim, init_scale, hidden_units, reg, threshold,
              layers, similarity):
  for name, value in (('num_items', num_items), ('num_clients', num_clients),
                      ('embedding_dim', embedding_dim), ('layers', layers)):
    if not (isinstance(value, int) and value >= 1):
      raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
  cw.check_positive('init_scale', init_scale)
  if not hidden_units or any(int(u) < 1 for u in hidden_units):
    raise ValueError(f'hidden_units must be one or more widths >= 1, got {hidden_units!r}')
  cw.check_non_negative('reg', reg)
  if not math.isfinite(threshold):
    raise ValueError(f'threshold must be finite, got {threshold!r}')
  if similarity not in SIMILARITIES:
    raise ValueError(f'similarity must be one of {SIMILARITIES}, got {similarity!r}')


def build_gpfedrec(
    *,
    num_items: int,
    num_clients: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    hidden_units: tuple[int, ...] = DEFAULT_HIDDEN_UNITS,
    reg: float = DEFAULT_REG,
    threshold: float = DEFAULT_THRESHOLD,
    layers: int = DEFAULT_LAYERS,
    similarity: str = 'cosine',
) -> process.RecommenderProcess:
  """Builds GPFedRec as a `RecommenderProcess` over a collecting TFF round (see module docstring).

  Args:
    num_clients: K, the number of clients (the rows of the server's client tables and graph).
    hidden_units: widths of each user's MLP hidden layers.
    reg: weight of the MSE regulariser toward R_k.
    threshold: neighbours are the clients whose similarity exceeds threshold x the graph's mean.
    layers: message-passing steps over the graph.
    similarity: 'cosine' (the paper) or 'released_distance' (the released code's cosine distance).
  """
  hidden_units = tuple(int(u) for u in hidden_units)
  _validate(num_items, num_clients, embedding_dim, init_scale, hidden_units, reg, threshold, layers,
            similarity)
  d = embedding_dim
  item_type = tff.TensorType(np.float32, [num_items, d])
  personal_size = gpfedrec_model.personal_size(d, hidden_units)
  client_state_type = tff.types.to_type(collections.OrderedDict(
      personal=tff.TensorType(np.float32, [None, personal_size]),
      item_logits=tff.TensorType(np.float32, [None, num_items])))
  state_type = tff.types.to_type(collections.OrderedDict(
      global_items=item_type, round_num=tff.TensorType(np.int32)))

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    return state['global_items']

  def collect(state, uploads):
    if len(uploads) != num_clients:
      raise ValueError(f'GPFedRec was built for {num_clients} clients, the round had {len(uploads)}')
    tables = np.empty((num_clients, num_items, d), np.float32)
    for k in range(num_clients):
      tables[k], uploads[k] = uploads[k], None
    graph = relation_graph(tables, similarity=similarity, threshold=threshold)
    global_items = graph_targets(tables, graph, layers=layers)
    return collections.OrderedDict([('global_items', global_items),
                                    ('round_num', np.int32(state['round_num'] + 1)),
                                    (process.CLIENT_MESSAGES, tables)])

  initial_items = cw.initial_item_embeddings(num_items, embedding_dim=d, init_scale=init_scale,
                                             seed=seed)
  initial_state = collections.OrderedDict(global_items=initial_items, round_num=np.int32(0))
  logits_fn = tf.function(
      functools.partial(gpfedrec_model.item_logits, embedding_dim=d, hidden_units=hidden_units),
      input_signature=[tf.TensorSpec([None, personal_size], tf.float32),
                       tf.TensorSpec([num_items, d], tf.float32)])

  def initial_client_states(clients):
    states = []
    for client in clients:
      personal = gpfedrec_model.initial_personal(client.user_ids, embedding_dim=d,
                                                 hidden_units=hidden_units, init_scale=init_scale,
                                                 seed=seed)
      states.append(collections.OrderedDict(
          personal=personal, item_logits=logits_fn(personal, initial_items).numpy()))
    return states

  def scores(state, client_states, clients, num_users):
    del state  # each user is scored with its own MLP and its client's last trained table
    return cw.stack_users([s['item_logits'] for s in client_states], clients, num_users, num_items)

  return process.build_collecting_recommender_process(
      name='gpfedrec', initial_state=initial_state, server_state_type=state_type,
      client_state_type=client_state_type, server_payload=server_payload, message_type=item_type,
      # every client's R_k is the initial table in round 1: K views of one array
      initial_messages=lambda: np.broadcast_to(initial_items, (num_clients, num_items, d)),
      client_fn=functools.partial(client_update, training=training, hidden_units=hidden_units,
                                  reg=float(reg)),
      collect=collect, initial_client_states=initial_client_states, scores=scores)

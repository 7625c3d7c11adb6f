"""PFedRec: dual personalisation of federated recommendation (a baseline of Table 2 of the paper).

Zhang et al., IJCAI 2023, "Dual Personalization on Federated Recommendation"; official code
`Zhangcx19/IJCAI-23-PFedRec` (`mlp.py` for the model, `engine.py` for the round and the evaluation,
`train.py` for the options). There is no user embedding: each user has a private score function
(`affine_output`, Linear(d -> 1)) over a shared item table, rating(u, i) = sigmoid(w_u . q_i + b_u)
(`models.pfedrec_model`). Every round each client starts from the server's item table
(`user_param_dict['embedding_item.weight'] = server`), keeps its score functions across rounds, takes
per batch a step on the score functions (items fixed) and then, with recomputed predictions, a step on
the item table (score functions fixed) (`fed_train_single_batch`), and uploads its fine-tuned item
table; the server averages the tables without weights (`aggregate_clients_params` divides by the
number of clients). Evaluation (`fed_evaluate`) scores each user with its own score function and the
item table its client fine-tuned in its last local training (the second personalisation), not the
server's average.

Adaptations to our protocol (each one for the same footing as FedMF and RQFedRec):
- Clients: 100 clients of several users each. Each user keeps its own score function inside the client
  (`score_functions: float32[U_k, d + 1]`, weight then bias), and the client keeps ONE fine-tuned item
  table shared by its users. PFedRec was written for one user per client: with `--partition=per_user`
  this is exactly the published setting.
- Client state: OrderedDict(score_functions, item_logits: float32[U_k, I]), CLIENTS-placed like
  mf_local's. Evaluation needs the fine-tuned table only through each user's logits over all items, so
  the client keeps those (w_u . q_i + b_u, computed at the end of its local training) instead of the
  table: U_k x I values instead of I x d, 512 times fewer with one user per client at d = 512. Every
  round starts from the broadcast, so the table itself is never needed again. (Until commit 879e60b
  the state held the table, 3.2 GB over 943 one-user clients, copied between this process and the
  TFF worker every round; the logits are the same up to float rounding.)
  The official code also uploads and averages the score-function bias (it deletes only
  `affine_output.weight` from the upload) but never loads the averaged bias back into a client, so it
  has no effect; we upload the item table only.
- Optimiser: Adam, lazy (row-sparse, `mf.row_sparse_adam`) on the touched item rows and on the score
  functions of the batch's users, with `training.learning_rate` and `training.weight_decay`, moments
  reset every round, one Adam state for the score functions and one for the item table (the two
  official optimisers). The official optimisers are SGD, lr 0.1 for the score function and
  lr * num_items * lr_eta (lr_eta = 80) for the item table, with dense L2 (0 by default). Adam's step
  size does not depend on the scale of the gradient, so the num_items * lr_eta factor, which sizes
  SGD's steps on the item table's small per-row gradients, has no direct counterpart: both parts use
  the same learning rate unless `item_learning_rate_scale` (default 1) multiplies the item table's.
  Weight decay touches only the rows a batch uses (lazy), as for FedMF.
- Loss: BCE over each positive and `training.num_negatives` sampled negatives (`mf.epoch_examples`,
  the exact sampler, resampled every epoch), `training.epochs` local epochs of `training.batch_size`.
  The official code draws 4 distinct negatives per positive once per round (reused by every local
  epoch) from the items the user never rated in any split; local_epoch 1, batch 256. The reported
  loss is the batch loss at the item step, the official `loss_i`.
- Initialisation: item table N(0, init_scale^2) (`cw.initial_item_embeddings`), score weights
  N(0, init_scale^2) per user drawn from (seed, 7, user) so they do not depend on the partition, bias 0.
  The official model uses torch's defaults (`nn.Embedding` N(0, 1), `nn.Linear` U(+-1/sqrt(d))) and
  gives every user the same initial score function (a deep copy of one model).
- Rounds and evaluation: every client takes part in every round (the official default
  `clients_sample_ratio` = 1), and users are ranked by our protocol's evaluation
  (`simulation.evaluate_scores`) instead of leave-one-out HR/NDCG against 99 sampled negatives.
- Communication: the item table down and up, I d values per client per round. The client state is not
  communicated; as TFF client state it crosses between this process and the TFF worker every round
  (U_k (d + 1 + I) values in and out per client).
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import pfedrec_model



def client_update(item_embeddings, client_state, data, *, training: cw.LocalTraining,
                  item_learning_rate_scale: float):
  """One client's round: PFedRec's alternating steps from the broadcast table; uploads the table.

  Args:
    item_embeddings: float32[I, d] the broadcast server table, where every round starts.
    client_state: OrderedDict(score_functions=float32[U_k, d + 1], item_logits=float32[U_k, I]);
      only the score functions are read.
    data: the client's positives and seed (`process.client_data_type`).

  Returns the fine-tuned table as the upload and, as the new client state, the score functions and
  the users' logits over all items with that table (`item_logits`).
  """
  scores, items, loss = pfedrec_model.train_local(
      client_state['score_functions'], item_embeddings, data['local_users'], data['items'],
      data['seed'], epochs=training.epochs, batch_size=training.batch_size,
      num_negatives=training.num_negatives, learning_rate=training.learning_rate,
      item_learning_rate=training.learning_rate * item_learning_rate_scale,
      weight_decay=training.weight_decay, excluded_items=data['excluded_items'])
  return process.ClientOutput(
      upload=items, weight=cw.example_weight(data),
      client_state=collections.OrderedDict(score_functions=scores, item_logits=item_logits(scores, items)),
      metrics=cw.metrics(loss=loss))


def item_logits(score_functions, item_embeddings):
  """float32[U_k, I] logits w_u . q_i + b_u of every user of `score_functions: float32[U_k, d + 1]`
  over every item of `item_embeddings: float32[I, d]`."""
  d = tf.shape(item_embeddings)[1]
  return (tf.matmul(score_functions[:, :d], item_embeddings, transpose_b=True)
          + score_functions[:, d:])


def _validate(num_items, embedding_dim, training, init_scale, item_learning_rate_scale):
  cw.check_table_options(num_items=num_items, embedding_dim=embedding_dim, init_scale=init_scale)
  if not isinstance(training, cw.LocalTraining):
    raise ValueError(f'training must be a client_work.LocalTraining, got {training!r}')
  cw.check_positive('item_learning_rate_scale', item_learning_rate_scale)


def build_pfedrec(
    *,
    num_items: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    item_learning_rate_scale: float = 1.0,
) -> process.RecommenderProcess:
  """Builds PFedRec as a `RecommenderProcess` (unweighted mean of the clients' item tables).

  Args:
    item_learning_rate_scale: the item table's Adam learning rate is
      `training.learning_rate * item_learning_rate_scale` (the official SGD scales it by
      num_items * lr_eta; see the module docstring).
  """
  _validate(num_items, embedding_dim, training, init_scale, item_learning_rate_scale)
  d = embedding_dim
  item_type = tff.TensorType(np.float32, [num_items, d])
  client_state_type = tff.types.to_type(collections.OrderedDict(
      score_functions=tff.TensorType(np.float32, [None, d + 1]),
      item_logits=tff.TensorType(np.float32, [None, num_items])))
  server = process.shared_value_server('item_embeddings', item_type)
  client_fn = functools.partial(client_update, training=training,
                                item_learning_rate_scale=float(item_learning_rate_scale))

  initial_items = cw.initial_item_embeddings(num_items, embedding_dim=d, init_scale=init_scale,
                                             seed=seed)
  initial_state = collections.OrderedDict(item_embeddings=initial_items, round_num=np.int32(0))

  def initial_client_states(clients):
    score_functions = cw.initial_score_functions(clients, embedding_dim=d, init_scale=init_scale,
                                              seed=seed)
    return [collections.OrderedDict(score_functions=s, item_logits=item_logits(s, initial_items).numpy())
            for s in score_functions]

  def scores(state, client_states, clients, num_users):
    del state  # each user is scored with its own client's fine-tuned table, not the server's
    # logits w_u . q^(k) + b_u with the table q^(k) client k fine-tuned (its `item_logits`)
    return cw.stack_users([s['item_logits'] for s in client_states], clients, num_users, num_items)

  return process.build_recommender_process(
      name='pfedrec', initial_state=initial_state, server_state_type=server.state_type,
      client_state_type=client_state_type, server_payload=server.server_payload, client_fn=client_fn,
      server_update=server.server_update, initial_client_states=initial_client_states, scores=scores,
      aggregator=tff.aggregators.UnweightedMeanFactory())

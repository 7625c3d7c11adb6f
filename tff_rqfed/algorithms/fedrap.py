"""FedRAP: federated recommendation with additive personalisation (Li, Long & Zhou, ICLR 2024).

Every user scores item i with a private score function on the sum of a private additive item table
D and the global item table C, rating = sigmoid(w_u . (D_i + C_i) + b_u), and trains all three on
BCE - lambda MSE(D, C) + mu L1(C) (`models.fedrap_model`). Only C is shared: each round the server
broadcasts C, every client trains its score functions, its D and a copy of C, uploads the copy, and
the server takes the *unweighted* mean of the uploads (`tff.aggregators.UnweightedMeanFactory`), as
the official code does (`mtics/FedRAP`, `model/engine.py`, `aggregateParamsFromClients` sums the
participants' `item_commonality` and divides by their number). Evaluation scores every item with
the user's own score function, its client's D and the global C (`federatedEvaluate`).

Regulariser schedule (`schedule`). The paper trains with a curriculum of increasing regulariser
weights ("learn the local and global views progressively with increasing regularization weights",
abstract). The official engine computes it, `lam = tanh(iteration / 10) * lambda` and the same for mu
(`vary_param='tanh'`, the default of `train.py`), but its loss reads the constant `config['lambda']`
and `config['mu']`, so the released code trains with fixed weights. Both are here:
`schedule='tanh'` (the default, the paper's curriculum) uses lambda_t = tanh(t / 10) * lambda and
mu_t = tanh(t / 10) * mu in round t = 0, 1, ... (the server state's `round_num`; the engine's
coefficients lag one round behind this, being updated at the end of a round); `schedule='fixed'` is
the released behaviour. The round's two weights are computed from `round_num` on the server and
broadcast with C (two scalars).

Adaptations to our protocol (each for the same footing as FedMF and RQFedRec):
- Clients of several users: FedRAP has one user per client. Here each user keeps its own score
  function (a row of `score_functions: float32[U_k, d + 1]`, weight then bias) and the users of a
  client share one D (`personal_items: float32[I, d]`). With `--partition=per_user` this is exactly
  the published setting. Every client takes part in every round (`clients_sample_ratio=1.0`, the
  official default).
- Loss: BCE over each positive and `num_negatives` sampled negatives per positive (`mf.epoch_examples`,
  the exact sampler), on the logit; the two regularisers as torch's mean-reduced `MSELoss` and
  `L1Loss` over the batch's looked-up rows (`regular='l1'`). FedRAP draws 4 negatives per positive.
- Optimiser: Adam with `training.learning_rate` and `training.weight_decay`, lazy (row-sparse) on D, C
  and the score rows, moments reset every round, `training.epochs` local epochs of
  `training.batch_size`. FedRAP uses SGD (lr 0.5 on the score function, 200 on D and C, L2 1e-4 on
  every row), an `ExponentialLR(0.95)` stepped every batch, learning rates decayed by 0.97 per round,
  10 local epochs of 2048 with early stop at relative loss change 1e-4.
- Initialisation: C is N(0, init_scale^2) (`cw.initial_item_embeddings`), D N(0, init_scale^2) per
  client from (seed, 6, the client's first user), a user's score weight N(0, init_scale^2) from
  (seed, 7, user) and its bias 0, so a user's initial weight does not depend on the partition. FedRAP
  uses torch's defaults (`nn.Embedding` N(0, 1) for C and D, `nn.Linear` U(+-1/sqrt(d)) for the score
  function) and starts every user from the same D and score function; we use the shared init scale.
- Communication: download is C plus the round's two weights (scalars), upload is C, I d values each.
  FedRAP's sparsity of C (its L1 term) is not exploited to compress the upload.

Cost: every client holds an I x d table (D) besides its score functions, and both cross TFF's
executor as client state every round, as mf_local's tables do; a local step updates three tables. On
ML-100k at d = 512 with 100 clients (2 CPUs, shared) a round took 10-14 s against FedMF's 1.5-2.5 s:
about 6-8 s of local training (2.2x FedMF's, measured on `client_fn` in plain TensorFlow) and the rest
moving the 100 D tables in and out of the executor.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import fedrap_model

SCHEDULES = ('tanh', 'fixed')
# `train.py`'s lambda and mu; the paper's increasing curriculum (see the module docstring).
DEFAULT_LAMBDA, DEFAULT_MU, DEFAULT_SCHEDULE = 0.1, 0.1, 'tanh'


def regulariser_weights(round_num, *, lam: float, mu: float, schedule: str):
  """(lambda_t, mu_t) float32 scalars of round `round_num` (int32, from 0) under `schedule`."""
  if schedule == 'fixed':
    factor = tf.constant(1.0)
  else:
    factor = tf.tanh(tf.cast(round_num, tf.float32) / 10.0)
  return lam * factor, mu * factor


def client_update(payload, client_state, data, *, training: cw.LocalTraining,
                  personal_lr_scale: float = 1.0):
  """One client's round: trains its score functions, its D and a copy of C; uploads the copy.

  Args:
    payload: OrderedDict(item_commonality=float32[I, d] C, lam=float32, mu=float32) the broadcast.
    client_state: OrderedDict(score_functions=float32[U_k, d + 1], personal_items=float32[I, d]).
    data: the client's positives and seed (`process.client_data_type`).
    personal_lr_scale: D's learning rate over `training.learning_rate` (`build_fedrap`).
  """
  scores, personal, common, loss, bce = fedrap_model.train_local(
      client_state['score_functions'], client_state['personal_items'], payload['item_commonality'],
      data['local_users'], data['items'], data['seed'], lam=payload['lam'], mu=payload['mu'],
      epochs=training.epochs, batch_size=training.batch_size, num_negatives=training.num_negatives,
      learning_rate=training.learning_rate, weight_decay=training.weight_decay,
      excluded_items=data['excluded_items'], personal_lr_scale=personal_lr_scale)
  return process.ClientOutput(
      upload=common, weight=cw.example_weight(data),
      client_state=collections.OrderedDict(score_functions=scores, personal_items=personal),
      metrics=cw.metrics(loss=loss, bce=bce))


def _validate(*, lam: float, mu: float, schedule: str, personal_lr_scale: float) -> None:
  cw.check_non_negative('lam', lam)
  cw.check_non_negative('mu', mu)
  cw.check_non_negative('personal_lr_scale', personal_lr_scale)
  if schedule not in SCHEDULES:
    raise ValueError(f'unknown schedule {schedule!r}; valid: {list(SCHEDULES)}')


def build_fedrap(
    *,
    num_items: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    lam: float = DEFAULT_LAMBDA,
    mu: float = DEFAULT_MU,
    schedule: str = DEFAULT_SCHEDULE,
    personal_lr_scale: float = 1.0,
) -> process.RecommenderProcess:
  """Builds FedRAP as a `RecommenderProcess` (unweighted mean of the uploaded C).

  Args:
    lam, mu: FedRAP's lambda (weight of -MSE(D, C)) and mu (weight of L1(C)); 0.1 each in `train.py`.
    schedule: 'tanh' (the paper's increasing curriculum) or 'fixed' (the released code); see the
      module docstring.
    personal_lr_scale: D's learning rate is `training.learning_rate` times this. 1 is FedRAP's code
      (one rate, `lr_args`, for D and C); 0 keeps every D at its initialisation, so C alone is
      learned (an ablation: FedRAP without its personal table); values between slow D down. Not in
      FedRAP's code or paper: added to test why FedRAP fails with one user per client
      (docs/RESULTS.md, Table 3).
  """
  _validate(lam=lam, mu=mu, schedule=schedule, personal_lr_scale=personal_lr_scale)
  d = embedding_dim
  item_type = tff.TensorType(np.float32, [num_items, d])
  state_type = tff.types.to_type(collections.OrderedDict(
      item_commonality=item_type, round_num=tff.TensorType(np.int32)))
  client_state_type = tff.types.to_type(collections.OrderedDict(
      score_functions=tff.TensorType(np.float32, [None, d + 1]), personal_items=item_type))

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    lam_t, mu_t = regulariser_weights(state['round_num'], lam=lam, mu=mu, schedule=schedule)
    return collections.OrderedDict(item_commonality=state['item_commonality'], lam=lam_t, mu=mu_t)

  client_fn = functools.partial(client_update, training=training, personal_lr_scale=personal_lr_scale)

  @tff.tensorflow.computation(state_type, item_type)
  def server_update(state, mean_commonality):
    return collections.OrderedDict(item_commonality=mean_commonality, round_num=state['round_num'] + 1)

  initial_state = collections.OrderedDict(
      item_commonality=cw.initial_item_embeddings(
          num_items, embedding_dim=d, init_scale=init_scale, seed=seed),
      round_num=np.int32(0))

  return process.build_recommender_process(
      name='fedrap', initial_state=initial_state, server_state_type=state_type,
      client_state_type=client_state_type, server_payload=server_payload, client_fn=client_fn,
      server_update=server_update,
      initial_client_states=functools.partial(
          initial_client_states, num_items=num_items, embedding_dim=d, init_scale=init_scale,
          seed=seed),
      scores=fedrap_scores, aggregator=tff.aggregators.UnweightedMeanFactory())


def initial_client_states(clients, *, num_items: int, embedding_dim: int, init_scale: float,
                          seed: int) -> list[collections.OrderedDict]:
  """Per client OrderedDict(score_functions=float32[U_k, d + 1], personal_items=float32[I, d]).

  A user's score weight is N(0, init_scale^2) from (seed, 7, user) and its bias 0; a client's D is
  N(0, init_scale^2) from (seed, 6, its first user), a stream apart from C's (seed, 2).
  """
  states = []
  score_functions = cw.initial_score_functions(
      clients, embedding_dim=embedding_dim, init_scale=init_scale, seed=seed)
  for client, scores in zip(clients, score_functions):
    first_user = int(client.user_ids[0]) if len(client.user_ids) else 0
    personal = np.random.default_rng([seed, 6, first_user]).normal(
        0.0, init_scale, (num_items, embedding_dim)).astype(np.float32)
    states.append(collections.OrderedDict(score_functions=scores, personal_items=personal))
  return states


def fedrap_scores(state, client_states, clients, num_users: int) -> np.ndarray:
  """float32[U, I] scores w_u . (D_k + C) + b_u of every user u of every client k (evaluation).

  `state` is a round's server state (its `item_commonality` is C: float32[I, d]).
  """
  return part_scores(state, client_states, clients, num_users, parts=(WHOLE,))[WHOLE]


# The additive parts of a user's item table that `part_scores` scores with; WHOLE is FedRAP's own.
WHOLE = 'personal + global'
PARTS = (WHOLE, 'global', 'personal')


def part_scores(state, client_states, clients, num_users: int,
                parts: tuple[str, ...] = PARTS) -> dict[str, np.ndarray]:
  """float32[U, I] scores of every user from each additive part of its item table (`parts`).

  'personal + global' is FedRAP's own score w_u . (D_k + C) + b_u (`fedrap_scores`), 'global' the
  shared table alone, w_u . C + b_u, and 'personal' the client's private table alone, w_u . D_k + b_u,
  each with the user's own score function. Which part carries a ranking, looked at after a run
  (`launchers.fedrap_parts`): the bias is in every part, so 'personal + global' = 'global' +
  'personal' - b_u. `client_states` may be memory-mapped: one client's D is read at a time.
  """
  common = np.asarray(state['item_commonality'])
  result = {part: np.zeros((num_users, common.shape[0]), np.float32) for part in parts}
  for client_state, client in zip(client_states, clients):
    score_rows = np.asarray(client_state['score_functions'])
    weights, bias = score_rows[:, :-1], score_rows[:, -1:]
    personal = np.asarray(client_state['personal_items'])
    tables = {WHOLE: personal + common, 'global': common, 'personal': personal}
    for part in parts:
      result[part][client.user_ids] = weights @ tables[part].T + bias
  return result


def mean_magnitudes(state, client_states) -> dict[str, float]:
  """Mean |value| of the global table C and of the clients' private tables D (mean over clients):
  how much each part weighs in `part_scores`' 'personal + global'."""
  personal = [float(np.mean(np.abs(np.asarray(s['personal_items'])))) for s in client_states]
  return {'global': float(np.mean(np.abs(np.asarray(state['item_commonality'])))),
          'personal': float(np.mean(personal))}

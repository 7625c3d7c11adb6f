"""FedRAP's model: additive item personalisation scored by a private per-user linear layer.

The model of "Federated Recommendation with Additive Personalization" (Li, Long & Zhou, ICLR 2024),
as written in the official code (`mtics/FedRAP`: `model/model.py` for the model, `model/loss.py` for
the objective, `model/engine.py` for the local step):

    rating(u, i) = sigmoid(w_u . (D_i + C_i) + b_u),

with a private score function (`affine_output = Linear(d -> 1)`: weight `w_u`, bias `b_u`), a private
additive item table `D` (`item_personality`) and the global item table `C` (`item_commonality`). The
local objective of a batch of B examples (`model/loss.py`, `regular='l1'`) is

    BCE(rating, label) - lambda * MSE(D_rows, C_rows) + mu * L1(C_rows),

where `D_rows`, `C_rows: float32[B, d]` are the rows the batch's items look up (one per example, so an
item in two examples counts twice) and MSE and L1 are torch's `MSELoss` / `L1Loss` with mean reduction
over all B x d values: the gradient of the L1 term is `mu * sign(C) / (B d)`.

Here a user's score function is one row `float32[d + 1]` (weight, then bias) of a table
`score_functions: float32[U_k, d + 1]`, so several users share one client and the row-sparse Adam of
`models.mf` trains it. Like `mf.train_local`, a client trains on its positives and `num_negatives`
sampled negatives per positive (`mf.epoch_examples`, the exact sampler), computes BCE on the logit
(torch's `BCELoss` on the sigmoid clamps the log at -100 instead) and trains compact copies of the
D and C rows its examples touch, so a step costs O(batch x d) whatever the number of items.
"""

from __future__ import annotations

import tensorflow as tf

from tff_rqfed.models import mf


def logits(score_rows, item_rows):
  """float32[B] logits w_u . item + b_u of `score_rows: float32[B, d + 1]` (weight ; bias) against
  `item_rows: float32[B, d]` (the personalised item vectors D_i + C_i)."""
  return tf.reduce_sum(score_rows[:, :-1] * item_rows, axis=1) + score_rows[:, -1]


def objective(labels, score_rows, personal_rows, common_rows, *, lam, mu):
  """FedRAP's batch loss (`model/loss.py`, `regular='l1'`): returns (loss, bce), float32 scalars.

  Args:
    labels: float32[B] 1 for a positive, 0 for a sampled negative.
    score_rows: float32[B, d + 1] the score function (weight ; bias) of each example's user.
    personal_rows, common_rows: float32[B, d] D and C rows of each example's item.
    lam, mu: float32 scalars, the weights of the two regularisers.
  """
  bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=labels, logits=logits(score_rows, personal_rows + common_rows)))
  independence = tf.reduce_mean(tf.square(personal_rows - common_rows))  # torch MSELoss(D, C)
  sparsity = tf.reduce_mean(tf.abs(common_rows))  # torch L1Loss(C, 0)
  return bce - lam * independence + mu * sparsity, bce


def train_local(score_functions, personal, common, local_users, positives, seed, *, lam, mu,
                epochs: int, batch_size: int, num_negatives: int, learning_rate: float,
                weight_decay: float = 0.0, excluded_items=None, personal_lr_scale: float = 1.0):
  """Minimises `objective` on one client's data with row-sparse Adam on all three tables.

  Adam's moments start at zero (one optimiser per call); `weight_decay` is added to the gradient of
  the rows a batch touches (PyTorch Adam convention, as `mf.row_sparse_adam`). D's learning rate is
  `learning_rate * personal_lr_scale` (FedRAP's code uses one rate, `lr_args`, for D and C: scale 1;
  0 keeps D at its initial value).

  Args:
    score_functions: float32[U_k, d + 1] the client's private per-user (weight ; bias) rows.
    personal: float32[I, d] the client's private additive item table D.
    common: float32[I, d] the broadcast global item table C.
    local_users, positives: int32[n] the client's training positives.
    seed: int[2] stateless seed (negatives and order, `mf.epoch_examples`).
    excluded_items: int32[C] items never drawn as negatives (cold items), or None (`mf.round_examples`).
    lam, mu: float32 scalars, this round's regulariser weights.

  Returns:
    (score_functions, personal, common, mean_loss, mean_bce): the trained tables and the mean over
    steps of the batch objective and of its BCE part (float32 scalars).
  """
  num_users, num_items = tf.shape(score_functions)[0], tf.shape(common)[0]
  examples = mf.round_examples(local_users, positives, num_users=num_users, num_items=num_items,
                               epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                               seed=seed, excluded_items=excluded_items)
  batch_users, batch_items, labels = examples.users, examples.items, examples.labels
  touched, compact_items = tf.unique(batch_items)
  adam = dict(learning_rate=learning_rate, weight_decay=weight_decay, in_place=True)
  personal_adam = dict(adam, learning_rate=learning_rate * personal_lr_scale)

  def body(step, s_t, sm, sv, d_t, dm, dv, c_t, cm, cv, loss_sum, bce_sum):
    start, end = examples.batch(step)
    bu, bi, by = batch_users[start:end], compact_items[start:end], labels[start:end]
    w, p, c = tf.gather(s_t, bu), tf.gather(d_t, bi), tf.gather(c_t, bi)
    with tf.GradientTape() as tape:
      tape.watch([w, p, c])
      loss, bce = objective(by, w, p, c, lam=lam, mu=mu)
    grad_w, grad_p, grad_c = tape.gradient(loss, [w, p, c])
    t = tf.cast(step + 1, tf.float32)
    s_t, sm, sv = mf.row_sparse_adam(s_t, sm, sv, bu, grad_w, step=t, **adam)
    d_t, dm, dv = mf.row_sparse_adam(d_t, dm, dv, bi, grad_p, step=t, **personal_adam)
    c_t, cm, cv = mf.row_sparse_adam(c_t, cm, cv, bi, grad_c, step=t, **adam)
    return step + 1, s_t, sm, sv, d_t, dm, dv, c_t, cm, cv, loss_sum + loss, bce_sum + bce

  # The loop owns these buffers (gather results, a deep copy, fresh zeros): rows are written in place.
  s_0 = tf.raw_ops.DeepCopy(x=score_functions)
  d_0, c_0 = tf.gather(personal, touched), tf.gather(common, touched)
  zeros = mf.fresh_zeros
  final = tf.while_loop(
      lambda step, *_: step < examples.total_steps, body,
      (tf.constant(0), s_0, zeros(s_0), zeros(s_0), d_0, zeros(d_0), zeros(d_0),
       c_0, zeros(c_0), zeros(c_0), tf.constant(0.0), tf.constant(0.0)))
  personal = tf.tensor_scatter_nd_update(personal, touched[:, None], final[4])
  common = tf.tensor_scatter_nd_update(common, touched[:, None], final[7])
  steps = tf.cast(tf.maximum(examples.total_steps, 1), tf.float32)
  return final[1], personal, common, final[10] / steps, final[11] / steps

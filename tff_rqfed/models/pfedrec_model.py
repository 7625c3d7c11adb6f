"""PFedRec's model and local training: an item table scored by a private per-user score function.

The model of Zhang et al., IJCAI 2023, "Dual Personalization on Federated Recommendation" (official code
`Zhangcx19/IJCAI-23-PFedRec`, `mlp.py`): there is no user embedding; user u's rating of item i is

    rating(u, i) = sigmoid(w_u . q_i + b_u),

with the item table `q: float32[I, d]` (`embedding_item`) and the user's score function, a Linear(d -> 1)
(`affine_output`). Here a client holds one score function per user as one row of
`score_functions: float32[U_k, d + 1]` (the weight w_u in the first d columns, the bias b_u last), so
the row-sparse Adam of `models.mf` updates exactly the users of a batch.

Every batch takes two steps, as `Engine.fed_train_single_batch` (`engine.py`) does: first a step on the
score functions with the item table fixed, then the predictions are recomputed with the new score
functions and a step on the item rows with the score functions fixed. Both minimise the binary
cross-entropy over the positives and `num_negatives` sampled negatives per positive (`mf.epoch_examples`,
the exact sampler), averaged over the batch. Each part has its own Adam state (the two official
optimisers). The gradients of this loss are written in closed form, d loss / d logit = (sigmoid(z) - y)
/ B, rather than taped: the same values with half the ops per step, which made a client's local
training as fast as FedMF's (it was 1.9x slower with two gradient tapes per batch).

Like `mf.train_local`, the steps train a compact copy of the item rows the client's examples touch and
write rows in place, so a step costs O(batch x d) whatever the number of items.
"""

from __future__ import annotations

import tensorflow as tf

from tff_rqfed.models import mf


def with_bias_input(item_rows):
  """float32[B, d + 1] item vectors with a constant 1 appended, so that w_u . q_i + b_u is the dot
  product of the score function row (w ; b) with (q ; 1)."""
  return tf.concat([item_rows, tf.ones_like(item_rows[:, :1])], axis=1)


def logits(score_rows, item_inputs):
  """float32[B] w_u . q_i + b_u of `score_rows: float32[B, d + 1]` (w ; b) and
  `item_inputs: float32[B, d + 1]` (q ; 1) (`with_bias_input`)."""
  return tf.reduce_sum(score_rows * item_inputs, axis=1)


def logit_gradients(logit_values, labels):
  """float32[B] d loss / d logit of the batch's mean binary cross-entropy: (sigmoid(z) - y) / B."""
  return (tf.sigmoid(logit_values) - labels) / tf.cast(tf.size(labels), tf.float32)


def score_function_step(score_table, m, v, item_inputs, users, labels, *, step, learning_rate: float,
                        weight_decay: float):
  """The first half of a batch: one Adam step on the score functions of `users`, items fixed.

  The gradient of the mean BCE with respect to user u's row (w ; b) is the sum over its examples of
  (sigmoid(z) - y) / B * (q_i ; 1), written out rather than taped (fewer ops per step).

  Args:
    score_table, m, v: float32[U_k, d + 1] the client's score functions and their Adam moments
      (buffers the caller owns: rows are written in place).
    item_inputs: float32[B, d + 1] the batch's item vectors with the bias input (`with_bias_input`).
    users, labels: int32[B] local user, float32[B] label of each example.
    step: float32 1-based step of this Adam state.

  Returns:
    (score_table, m, v) updated.
  """
  error = logit_gradients(logits(tf.gather(score_table, users), item_inputs), labels)
  return mf.row_sparse_adam(score_table, m, v, users, error[:, None] * item_inputs, step=step,
                            learning_rate=learning_rate, weight_decay=weight_decay, in_place=True)


def item_step(item_table, m, v, item_inputs, positions, score_rows, labels, *, step,
              learning_rate: float, weight_decay: float):
  """The second half of a batch: predictions recomputed with the new score functions, one Adam step
  on the item rows with the score functions fixed; the gradient of the mean BCE with respect to
  q_i is (sigmoid(z) - y) / B * w_u per example.

  Args:
    item_table, m, v: float32[P, d] the (compact) item table and its Adam moments (owned buffers).
    item_inputs: float32[B, d + 1] (item_table[positions] ; 1), read before this step.
    positions: int32[B] row of each example's item in `item_table`.
    score_rows: float32[B, d + 1] each example's user's score function after the first half.
    step: float32 1-based step of this Adam state.

  Returns:
    (item_table, m, v, loss: float32 the batch loss at which this step's gradient is taken).
  """
  z = logits(score_rows, item_inputs)
  loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=z))
  d = tf.shape(item_table)[1]
  item_table, m, v = mf.row_sparse_adam(
      item_table, m, v, positions, logit_gradients(z, labels)[:, None] * score_rows[:, :d],
      step=step, learning_rate=learning_rate, weight_decay=weight_decay, in_place=True)
  return item_table, m, v, loss


def train_local(
    score_functions: tf.Tensor,
    items: tf.Tensor,
    local_users: tf.Tensor,
    positives: tf.Tensor,
    seed: tf.Tensor,
    *,
    epochs: int,
    batch_size: int,
    num_negatives: int,
    learning_rate: float,
    item_learning_rate: float,
    weight_decay: float,
    excluded_items=None,
):
  """PFedRec's local training on one client (see module docstring).

  Args:
    score_functions: float32[U_k, d + 1] the client's private score functions (w ; b) per user.
    items: float32[I, d] the item table the client starts from (the broadcast).
    local_users, positives: int32[n] the client's training positives.
    seed: int32[2] stateless seed (negatives and order, `mf.epoch_examples`).
    excluded_items: int32[C] items never drawn as negatives (cold items), or None (`mf.round_examples`).
    learning_rate, item_learning_rate: Adam learning rates of the score functions and the items.

  Returns:
    (score_functions, items, mean_loss: float32) where `mean_loss` is the mean over steps of the loss
    at the item step (the official `loss_i`).
  """
  num_users, num_items = tf.shape(score_functions)[0], tf.shape(items)[0]
  examples = mf.round_examples(local_users, positives, num_users=num_users, num_items=num_items,
                               epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                               seed=seed, excluded_items=excluded_items)
  batch_users, batch_items, labels = examples.users, examples.items, examples.labels
  touched, compact_items = tf.unique(batch_items)

  def body(step, scores_t, sm, sv, items_t, im, iv, loss_sum):
    start, end = examples.batch(step)
    bu, bi, by = batch_users[start:end], compact_items[start:end], labels[start:end]
    t = tf.cast(step + 1, tf.float32)
    q = with_bias_input(tf.gather(items_t, bi))
    scores_t, sm, sv = score_function_step(scores_t, sm, sv, q, bu, by, step=t,
                                           learning_rate=learning_rate, weight_decay=weight_decay)
    items_t, im, iv, loss = item_step(items_t, im, iv, q, bi, tf.gather(scores_t, bu), by, step=t,
                                      learning_rate=item_learning_rate, weight_decay=weight_decay)
    return step + 1, scores_t, sm, sv, items_t, im, iv, loss_sum + loss

  # The score functions take the user table's place in the loop state.
  score_functions, items, _, mean_loss = mf.train_compact(
      body, users=score_functions, table=items, touched=touched, total_steps=examples.total_steps)
  return score_functions, items, mean_loss

"""NeuMF (He et al. 2017, "Neural Collaborative Filtering"): a GMF and an MLP tower fused by one output layer.

The model FedNCF federates, as written in the FedCIA repository (`Mingzhe-Han/FedCIA`, `model/NCF.py`):

    score(u, i) = w^T [p_u^G * q_i^G ; MLP([p_u^M ; q_i^M])] + b,    MLP = (Linear -> ReLU) per layer,

with separate GMF and MLP embeddings for users (`p`) and items (`q`). Here each side's two embeddings
are stored side by side in one table (`users: float32[U_k, 2d]`, `items: float32[I, 2d]`, GMF in the
first d columns), so the row-sparse Adam and compact-table loop of `models.mf` serve both, and the
dense part is a flat list of weight tensors (`dense_weights`: per MLP layer a kernel and a bias, then
the output layer's kernel `[d + h_last, 1]` and bias `[1]`).

Like `mf.train_local`, a client trains on its positives and `num_negatives` sampled negatives per
positive (`mf.epoch_examples`, the exact sampler), with binary cross-entropy on the logit.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rqfed.models import mf


def dense_shapes(embedding_dim: int, hidden_units) -> list[tuple[int, ...]]:
  """Shapes of the dense weights: (kernel, bias) per MLP layer, then the output layer's (kernel, bias)."""
  shapes, width = [], 2 * embedding_dim
  for units in hidden_units:
    shapes += [(width, units), (units,)]
    width = units
  return shapes + [(embedding_dim + width, 1), (1,)]


def initial_dense_weights(embedding_dim: int, hidden_units, *, seed: int) -> list[np.ndarray]:
  """PyTorch's `nn.Linear` initialisation (kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))), as the
  official code gets by default; float32 arrays in `dense_shapes` order."""
  rng = np.random.default_rng([seed, 5])
  weights = []
  for shape in dense_shapes(embedding_dim, hidden_units):
    fan_in = shape[0] if len(shape) == 2 else weights[-1].shape[0]
    bound = 1.0 / np.sqrt(fan_in)
    weights.append(rng.uniform(-bound, bound, shape).astype(np.float32))
  return weights


def logits(user_rows, item_rows, dense_weights):
  """float32[B] NeuMF logits of `user_rows`, `item_rows: float32[B, 2d]` (GMF ; MLP halves)."""
  d = tf.shape(user_rows)[1] // 2
  gmf = user_rows[:, :d] * item_rows[:, :d]
  hidden = tf.concat([user_rows[:, d:], item_rows[:, d:]], axis=1)
  for layer in range(len(dense_weights) // 2 - 1):
    hidden = tf.nn.relu(tf.matmul(hidden, dense_weights[2 * layer]) + dense_weights[2 * layer + 1])
  fused = tf.concat([gmf, hidden], axis=1)
  return tf.squeeze(tf.matmul(fused, dense_weights[-2]), axis=1) + dense_weights[-1][0]


def dense_adam(weights, m, v, grads, *, step, learning_rate: float, weight_decay: float = 0.0,
               beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """One Adam step on every dense weight (all are used by every example, so no row sparsity);
  `weight_decay` is added to the gradient (PyTorch Adam convention, as `mf.row_sparse_adam`)."""
  new_w, new_m, new_v = [], [], []
  for w, mw, vw, g in zip(weights, m, v, grads):
    if weight_decay:
      g = g + weight_decay * w
    mw = beta_1 * mw + (1.0 - beta_1) * g
    vw = beta_2 * vw + (1.0 - beta_2) * tf.square(g)
    m_hat = mw / (1.0 - tf.pow(beta_1, step))
    v_hat = vw / (1.0 - tf.pow(beta_2, step))
    new_w.append(w - learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon))
    new_m.append(mw)
    new_v.append(vw)
  return new_w, new_m, new_v


def train_local(users, items, dense_weights, local_users, positives, seed, *, epochs: int,
                batch_size: int, num_negatives: int, learning_rate: float, weight_decay: float = 0.0,
                excluded_items=None):
  """BCE with sampled negatives on one client; Adam (row-sparse on the tables, dense on the MLP).

  Args:
    users: float32[U_k, 2d] the client's private (GMF ; MLP) user embeddings.
    items: float32[I, 2d] the shared (GMF ; MLP) item embeddings.
    dense_weights: list of float32 tensors in `dense_shapes` order (shared).
    local_users, positives: int32[n] the client's training positives.
    seed: int[2] stateless seed (negatives and order, `mf.epoch_examples`).
    excluded_items: int32[C] items never drawn as negatives (cold items), or None (`mf.round_examples`).

  Returns:
    (users, items, dense_weights, mean_loss: float32).
  """
  num_users, num_items = tf.shape(users)[0], tf.shape(items)[0]
  examples = mf.round_examples(local_users, positives, num_users=num_users, num_items=num_items,
                               epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                               seed=seed, excluded_items=excluded_items)
  batch_users, batch_items, labels = examples.users, examples.items, examples.labels
  touched, compact_items = tf.unique(batch_items)

  def body(step, users_t, um, uv, items_t, im, iv, loss_sum, dense):
    weights, m, v = dense
    start, end = examples.batch(step)
    bu, bi, by = batch_users[start:end], compact_items[start:end], labels[start:end]
    u, q = tf.gather(users_t, bu), tf.gather(items_t, bi)
    with tf.GradientTape() as tape:
      tape.watch([u, q] + weights)
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=by, logits=logits(u, q, weights)))
    grad_u, grad_q, *grad_w = tape.gradient(loss, [u, q] + weights)
    t = tf.cast(step + 1, tf.float32)
    users_t, um, uv = mf.row_sparse_adam(users_t, um, uv, bu, grad_u, step=t,
                                         learning_rate=learning_rate, weight_decay=weight_decay,
                                         in_place=True)
    items_t, im, iv = mf.row_sparse_adam(items_t, im, iv, bi, grad_q, step=t,
                                         learning_rate=learning_rate, weight_decay=weight_decay,
                                         in_place=True)
    weights, m, v = dense_adam(weights, m, v, grad_w, step=t, learning_rate=learning_rate,
                               weight_decay=weight_decay)
    return step + 1, users_t, um, uv, items_t, im, iv, loss_sum + loss, [weights, m, v]

  return mf.train_compact(body, users=users, table=items, touched=touched,
                          total_steps=examples.total_steps, dense=dense_weights)

"""GPFedRec's model and local training: a private user embedding and MLP per user over a shared item table.

The model of Zhang et al., 2024, "GPFedRec: Graph-Guided Personalization for Federated Recommendation"
(official code `Zhangcx19/GPFedRec`, `mlp.py` for the model, `engine.py` for the local step,
`utils.py` for the regulariser): each user has a private user embedding p_u (`embedding_user`, one row)
and a private MLP over the concatenation of p_u and the item's embedding q_i,

    rating(u, i) = sigmoid(a_u . relu(... relu([p_u ; q_i] W1_u + b1_u) ...) + c_u),

(`fc_layers` with ReLU, then `affine_output`), and every batch takes ONE joint step on the user's
embedding, MLP and the item table (`fed_train_single_batch`: a single `loss.backward()`, three
optimisers step) on

    BCE(batch) + reg * MSE(item table, R_k),

where R_k is the graph-aggregated table the server sent this client (`compute_regularization`,
`torch.nn.MSELoss` with mean reduction over all I x d entries).

A client holds the private parameters of each of its users as one row of
`personal: float32[U_k, P]` (`personal_size`: p_u, then each layer's kernel and bias, then the output
layer), so the row-sparse Adam of `models.mf` updates exactly the users of a batch. The first layer's
kernel is read as its user half and item half (two contiguous [d, h1] blocks of the row, no strided
slice). Each example goes through its own user's MLP: the batch's item rows are laid out per user
(`user_blocks`: [n, longest user's count, d], zero-padded) and every layer is one batched product over
the users, about B x d x h1 multiply-adds in the first layer instead of the n x B x d x h1 of applying
every user's kernel to every example (n users in a batch: about 9 with 100 clients on ML-100k), and no
per-example copy of a kernel.

Like `pfedrec_model.train_local`, the steps train a compact copy of the item rows the client's examples
touch. The regulariser is applied to the rows a batch touches (its sum over those rows divided by I d,
the mean's normaliser): the released code pulls every row of the table toward R_k at every batch,
which with Adam (whose step does not shrink with the gradient) would move rows no example touches by a
full step each batch; over a round a client's batches touch most of the table (ML-100k, 100 clients:
its positives and 4 sampled negatives each).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rqfed.models import mf


def layer_shapes(embedding_dim: int, hidden_units: tuple[int, ...]) -> list[tuple[int, ...]]:
  """Shapes of one user's parameters in row order: p_u [d], then (kernel, bias) of each hidden layer
  (the first takes [p_u ; q_i], 2d wide), then the output layer's kernel [h_last] and bias [1]."""
  shapes = [(embedding_dim,)]
  width = 2 * embedding_dim
  for units in hidden_units:
    shapes += [(width, units), (units,)]
    width = units
  return shapes + [(width,), (1,)]


def personal_size(embedding_dim: int, hidden_units: tuple[int, ...]) -> int:
  """P, the width of a user's row of `personal`."""
  return int(sum(np.prod(s) for s in layer_shapes(embedding_dim, hidden_units)))


def initial_personal(user_ids, *, embedding_dim: int, hidden_units: tuple[int, ...],
                     init_scale: float, seed: int) -> np.ndarray:
  """float32[U_k, P]: p_u ~ N(0, init_scale^2) and each layer U(+-1/sqrt(fan_in)) (torch's Linear
  default), drawn from (seed, 8, global user) so a user's start does not depend on the partition."""
  shapes = layer_shapes(embedding_dim, hidden_units)
  rows = []
  for user in user_ids:
    rng = np.random.default_rng([seed, 8, int(user)])
    parts = [rng.normal(0.0, init_scale, shapes[0])]
    for kernel_shape, bias_shape in zip(shapes[1::2], shapes[2::2]):  # hidden layers, then output
      bound = 1.0 / np.sqrt(kernel_shape[0])
      parts += [rng.uniform(-bound, bound, kernel_shape).ravel(),
                rng.uniform(-bound, bound, bias_shape)]
    rows.append(np.concatenate(parts))
  return np.asarray(rows, np.float32).reshape(len(user_ids), -1)


def _unpack(personal_rows, embedding_dim: int, hidden_units: tuple[int, ...]):
  """The parameters of `personal_rows: float32[n, P]` as tensors [n, *shape]: p_u [n, d], the first
  layer's user-half kernel [n, d, h1] and item-half kernel [n, d, h1] (rows :d and d: of its [2d, h1]
  kernel, contiguous in the row), its bias, then the other layers as `layer_shapes`."""
  shapes = layer_shapes(embedding_dim, hidden_units)
  half = (embedding_dim, shapes[1][1])
  shapes = [shapes[0], half, half] + shapes[2:]
  sizes = [int(np.prod(s)) for s in shapes]
  parts = tf.split(personal_rows, sizes, axis=1)
  return [tf.reshape(p, [-1, *s]) for p, s in zip(parts, shapes)]


def user_blocks(positions):
  """Where each example goes in a per-user layout of a batch.

  Args:
    positions: int32[B] the user (row of the batch's parameters) of each example.

  Returns:
    (index: int32[B, 2] the (user, rank among that user's examples) of each example,
     longest: int32 the largest number of examples of one user).
  """
  size = tf.size(positions)
  counts = tf.math.bincount(positions)
  order = tf.argsort(positions, stable=True)
  first = tf.cumsum(counts, exclusive=True)
  ranks = tf.scatter_nd(order[:, None], tf.range(size) - tf.gather(first, tf.gather(positions, order)),
                        [size])
  return tf.stack([positions, ranks], axis=1), tf.maximum(tf.reduce_max(counts), 0)


def _mlp(params, item_blocks):
  """float32[n, L] logits of each user over its own items: user j's MLP (`params` from `_unpack`) over
  row l of `item_blocks: float32[n, L, d]`, as batched products over the users."""
  user, user_kernel, item_kernel, bias = params[:4]
  layers, out_kernel, out_bias = params[4:-2], params[-2], params[-1]
  user_part = tf.einsum('nd,ndh->nh', user, user_kernel) + bias
  hidden = tf.nn.relu(tf.matmul(item_blocks, item_kernel) + user_part[:, tf.newaxis])
  for kernel, layer_bias in zip(layers[::2], layers[1::2]):
    hidden = tf.nn.relu(tf.matmul(hidden, kernel) + layer_bias[:, tf.newaxis])
  return tf.einsum('nlh,nh->nl', hidden, out_kernel) + out_bias


def logits(personal_rows, positions, item_rows, *, embedding_dim: int, hidden_units: tuple[int, ...]):
  """float32[B] logits of examples whose user is row `positions[b]` of `personal_rows: float32[n, P]`
  and whose item vector is `item_rows: float32[B, d]` (each example through its own user's MLP, in the
  per-user layout of `user_blocks`)."""
  params = _unpack(personal_rows, embedding_dim, hidden_units)
  index, longest = user_blocks(positions)
  shape = tf.stack([tf.shape(personal_rows)[0], longest, tf.shape(item_rows)[1]])
  return tf.gather_nd(_mlp(params, tf.scatter_nd(index, item_rows, shape)), index)


def item_logits(personal, items, *, embedding_dim: int, hidden_units: tuple[int, ...]):
  """float32[U_k, I] logits of every user of `personal: float32[U_k, P]` over every item of
  `items: float32[I, d]`, one user at a time (the first layer's item half is I x d x h1 a user)."""

  def one_user(row):
    return _mlp(_unpack(row[tf.newaxis], embedding_dim, hidden_units), items[tf.newaxis])[0]

  return tf.map_fn(one_user, personal,
                   fn_output_signature=tf.TensorSpec([items.shape[0]], tf.float32))


def train_local(
    personal: tf.Tensor,
    items: tf.Tensor,
    target: tf.Tensor,
    local_users: tf.Tensor,
    positives: tf.Tensor,
    seed: tf.Tensor,
    *,
    hidden_units: tuple[int, ...],
    reg: float,
    epochs: int,
    batch_size: int,
    num_negatives: int,
    learning_rate: float,
    weight_decay: float,
    excluded_items=None,
):
  """GPFedRec's local training on one client (see module docstring).

  Args:
    personal: float32[U_k, P] the client's users' private parameters.
    items: float32[I, d] the item table the client starts from (the broadcast global table).
    target: float32[I, d] R_k, the graph-aggregated table the regulariser pulls toward.
    local_users, positives: int32[n] the client's training positives.
    seed: int32[2] stateless seed (negatives and order, `mf.epoch_examples`).
    excluded_items: int32[C] items never drawn as negatives (cold items), or None (`mf.round_examples`).

  Returns:
    (personal, items, mean_loss: float32 mean over steps of BCE + reg * MSE, mean_bce: float32).
  """
  d = items.shape[1]
  num_users, num_items = tf.shape(personal)[0], tf.shape(items)[0]
  examples = mf.round_examples(local_users, positives, num_users=num_users, num_items=num_items,
                               epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                               seed=seed, excluded_items=excluded_items)
  touched, compact_positions = tf.unique(examples.items)
  compact_target = tf.gather(target, touched)
  table_size = tf.cast(num_items * d, tf.float32)

  def body(step, personal_t, pm, pv, items_t, im, iv, loss_sum, bce_sum):
    start, end = examples.batch(step)
    bu, bi, by = examples.users[start:end], compact_positions[start:end], examples.labels[start:end]
    batch_users, user_positions = tf.unique(bu)
    batch_items, item_positions = tf.unique(bi)
    t = tf.cast(step + 1, tf.float32)
    user_rows, item_rows = tf.gather(personal_t, batch_users), tf.gather(items_t, batch_items)
    with tf.GradientTape() as tape:
      tape.watch([user_rows, item_rows])
      z = logits(user_rows, user_positions, tf.gather(item_rows, item_positions), embedding_dim=d,
                 hidden_units=hidden_units)
      bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=by, logits=z))
      pull = tf.reduce_sum(tf.square(item_rows - tf.gather(compact_target, batch_items)))
      loss = bce + reg * pull / table_size
    user_grads, item_grads = tape.gradient(loss, [user_rows, item_rows])
    personal_t, pm, pv = mf.row_sparse_adam(
        personal_t, pm, pv, batch_users, user_grads, step=t, learning_rate=learning_rate,
        weight_decay=weight_decay, in_place=True)
    items_t, im, iv = mf.row_sparse_adam(
        items_t, im, iv, batch_items, item_grads, step=t, learning_rate=learning_rate,
        weight_decay=weight_decay, in_place=True)
    return step + 1, personal_t, pm, pv, items_t, im, iv, loss_sum + loss, bce_sum + bce

  # The loop owns these buffers (a gather result, a deep copy, fresh zeros): rows are written in place.
  compact = tf.gather(items, touched)
  personal_t = tf.raw_ops.DeepCopy(x=personal)
  final = tf.while_loop(
      lambda step, *_: step < examples.total_steps, body,
      (tf.constant(0), personal_t, mf.fresh_zeros(personal_t), mf.fresh_zeros(personal_t), compact,
       mf.fresh_zeros(compact), mf.fresh_zeros(compact), tf.constant(0.0), tf.constant(0.0)))
  items = tf.tensor_scatter_nd_update(items, touched[:, None], final[4])
  steps = tf.cast(tf.maximum(examples.total_steps, 1), tf.float32)
  return final[1], items, final[7] / steps, final[8] / steps

"""Matrix-factorisation backbone: scores, BCE with sampled negatives, row-sparse Adam (Sec. 3.1, Eq. 1, 3).

The score of user u for item i is the dot product of their embeddings (Eq. 1 with P = dot product). A
client minimises the binary cross-entropy of Eq. 3 over its positives and `num_negatives` items sampled
uniformly per positive from the items the user did not interact with (resampled every local epoch).

Items are *parameterised*: an item vector is a weighted sum of rows of a parameter table
`params: float32[P, d]`,

    item_vector(i) = sum_r coefficients[i, r] * params[rows[i, r]],

so the same training loop serves an ID-indexed item table (R = 1, rows = item id, coefficient 1; FedMF)
and residual-quantised codebooks (R = 2L, rows = code rows of both channels, coefficients 1 - lambda and
lambda; Eq. 6, used by the `w/o IE` ablation and by the codebook fit of Eq. 7).

Everything here is plain graph-compatible TensorFlow so it can run inside `tff.tensorflow.computation`.
The optimiser is written by hand: Keras' Adam decays the moments of every row at every step and TFF's
functional optimisers are dense, so a client step would cost O(items x d). `row_sparse_adam` updates only
the rows a batch touches (the "lazy Adam" rule with a global step count). The user table is small and
uses the same rule.

What a client step costs (benchmarks/round_speed.py): `train_local` trains a compact copy of the rows
its examples touch and writes rows in place (`overwrite_rows`), so a step costs O(batch x d) whatever
the size of the item table; copying the table and both moments at every step, as
`tf.tensor_scatter_nd_update` in a loop does, made a client 1.7x slower on ML-100k and 3x on a
16k-item table.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tff_rqfed import random_streams

def row_sparse_adam(
    table: tf.Tensor,
    m: tf.Tensor,
    v: tf.Tensor,
    rows: tf.Tensor,
    row_gradients: tf.Tensor,
    *,
    step: tf.Tensor,
    learning_rate: float,
    weight_decay: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    in_place: bool = False,
):
  """One Adam step on the rows `rows` of `table: float32[P, d]` only.

  Args:
    table, m, v: float32[P, d] parameters and Adam moments.
    rows: int32[B] row index of each gradient row (may repeat; repeats are summed).
    row_gradients: float32[B, d].
    step: float32 scalar, 1-based global step (bias correction).
    weight_decay: L2 coefficient added to the gradient of touched rows (PyTorch Adam convention).
    in_place: write the rows into the buffers of `table`, `m` and `v` instead of copying them
      (`overwrite_rows`); only for tensors the caller owns (see `overwrite_rows`).

  Returns:
    (table, m, v) updated.
  """
  unique_rows, position = tf.unique(rows)
  grads = tf.math.unsorted_segment_sum(row_gradients, position, tf.size(unique_rows))
  index = unique_rows[:, None]
  old = tf.gather(table, unique_rows)
  if weight_decay:  # adding 0 * old changes nothing: skip the two passes when there is no decay
    grads = grads + weight_decay * old
  m_rows = beta_1 * tf.gather(m, unique_rows) + (1.0 - beta_1) * grads
  v_rows = beta_2 * tf.gather(v, unique_rows) + (1.0 - beta_2) * tf.square(grads)
  m_hat = m_rows / (1.0 - tf.pow(beta_1, step))
  v_hat = v_rows / (1.0 - tf.pow(beta_2, step))
  new = old - learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon)
  if in_place:
    return (overwrite_rows(table, unique_rows, new), overwrite_rows(m, unique_rows, m_rows),
            overwrite_rows(v, unique_rows, v_rows))
  return (
      tf.tensor_scatter_nd_update(table, index, new),
      tf.tensor_scatter_nd_update(m, index, m_rows),
      tf.tensor_scatter_nd_update(v, index, v_rows),
  )


def overwrite_rows(table: tf.Tensor, rows: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
  """table[rows] = values in the buffer of `table: float32[P, d]`, without copying it.

  `tf.tensor_scatter_nd_update` copies the whole table whenever it cannot reuse the input buffer,
  which inside a `tf.while_loop` is every step. TF's in-place row update (the op behind
  `alias_inplace_update`) writes the rows into the existing buffer. It is safe only on a tensor the
  caller owns: one created inside the same computation (a `tf.gather` result, `fresh_zeros`,
  `tf.raw_ops.DeepCopy`) whose old value no op reads afterwards. Every reader of the old rows must
  feed `values` (the data dependency orders them before the write). `rows: int32[k]` must be unique.
  """
  return tf.raw_ops.InplaceUpdate(x=table, i=rows, v=values)


def fresh_zeros(like: tf.Tensor) -> tf.Tensor:
  """Zeros shaped like `like` in a new buffer that graph optimisation never folds into a constant
  (`tf.raw_ops.Empty` with init), so `overwrite_rows` may write into it."""
  return tf.raw_ops.Empty(shape=tf.shape(like), dtype=like.dtype, init=True)


def train_compact(body, *, users, table, touched, total_steps, dense=()):
  """Runs `total_steps` local steps `body` on a compact copy of the rows `touched` of `table`.

  The loop state, which `body(*state)` maps to the next one, is (step, users, users_m, users_v,
  compact, compact_m, compact_v, loss_sum), followed with `dense` by one more entry, the list
  [weights, weights_m, weights_v] of three lists: the client's user table `float32[U_k, d]`, the
  compact rows `float32[len(touched), d]` and the dense weights (NeuMF's or RLMRec's MLP), each with
  its Adam moments. The loop owns these buffers (a deep copy, a gather result, fresh zeros), so
  `body` may write rows in place (`overwrite_rows`).

  Returns:
    (users, table with the trained rows scattered back once, [dense weights], mean loss per step).
  """
  compact = tf.gather(table, touched)
  users_t = tf.raw_ops.DeepCopy(x=users)
  state = (tf.constant(0), users_t, fresh_zeros(users_t), fresh_zeros(users_t), compact,
           fresh_zeros(compact), fresh_zeros(compact), tf.constant(0.0))
  if dense:
    state += ([list(dense), [tf.zeros_like(w) for w in dense], [tf.zeros_like(w) for w in dense]],)
  final = tf.while_loop(lambda step, *_: step < total_steps, body, state)
  table = tf.tensor_scatter_nd_update(table, touched[:, None], final[4])
  mean_loss = final[7] / tf.cast(tf.maximum(total_steps, 1), tf.float32)
  return final[1], table, (list(final[8][0]) if dense else []), mean_loss


def sample_negatives(
    local_users: tf.Tensor,
    positive_mask: tf.Tensor,
    *,
    num_negatives: int,
    seed: tf.Tensor,
) -> tf.Tensor:
  """Draws `num_negatives` items per positive, uniformly among the user's non-positives.

  Exact: a draw is a uniform rank r in [0, c_u) among the c_u non-positive items of user u, mapped to
  its item by a binary search (`tf.searchsorted`) in the running count of non-positives over the
  row-major [U_k * I] mask. Nothing is redrawn, so a dense user (half its items positive, say) never
  gets a positive back. The rank is a full-range 64-bit draw modulo c_u, whose bias is below
  c_u / 2^64 (< 1e-15 for any catalogue that fits in memory). The cost is one cumulative sum over the
  client's [U_k, I] mask per call.

  Args:
    local_users: int32[n] local user of each positive.
    positive_mask: bool[U_k, I], True where the user has a training positive.
    seed: int[2] stateless seed.

  Returns:
    int32[n * num_negatives] negative items, aligned with `tf.repeat(local_users, num_negatives)`.

  Raises:
    tf.errors.InvalidArgumentError: a user of `local_users` has every item as a positive (nothing to
      sample).
  """
  num_items = tf.shape(positive_mask)[1]
  is_negative = tf.cast(tf.logical_not(positive_mask), tf.int32)
  negatives_per_user = tf.reduce_sum(is_negative, axis=1)  # c_u: int32[U_k]
  running_count = tf.cumsum(tf.reshape(is_negative, [-1]))  # non-positives up to each flat cell
  first_rank = tf.cumsum(negatives_per_user, exclusive=True)  # rank of each user's first non-positive
  users = tf.repeat(local_users, num_negatives)
  available = tf.gather(negatives_per_user, users)
  check = tf.debugging.assert_positive(
      available, message='sample_negatives: a user has every item as a training positive, so there '
      'is no negative to sample')
  with tf.control_dependencies([check]):
    available = tf.cast(tf.maximum(available, 1), tf.int64)
  draws = tf.random.stateless_uniform(tf.shape(users), seed, minval=None, maxval=None,
                                      dtype=tf.int64)
  rank = tf.cast(tf.math.floormod(draws, available), tf.int32)  # uniform in [0, c_u)
  cell = tf.searchsorted(running_count, tf.gather(first_rank, users) + rank, side='right')
  return cell - users * num_items


def item_vectors(params, rows, coefficients, items):
  """float32[B, d] vectors of `items` under the parameterisation (params[P,d], rows[I,R], coefficients[I,R])."""
  item_rows = tf.gather(rows, items)  # [B, R]
  item_coef = tf.gather(coefficients, items)  # [B, R]
  return combine_rows(item_coef, tf.gather(params, item_rows))


def combine_rows(coefficients, row_values):
  """float32[B, d] = sum_r coefficients[b, r] * row_values[b, r] for `row_values: float32[B, R, d]`.

  With one row per item (R = 1, an ID-indexed table) this is one product per value, computed as such
  (same result, no batched matrix product and its gradient).
  """
  if coefficients.shape.rank == 2 and coefficients.shape[1] == 1:
    return coefficients * tf.squeeze(row_values, axis=1)
  return tf.einsum('br,brd->bd', coefficients, row_values)


def epoch_examples(local_users, items, positive_mask, *, epoch: int, seed, num_negatives: int):
  """One epoch's shuffled examples: (users int32[E], items int32[E], labels float32[E]), E = n (1 + N).

  Every positive once with label 1 and `num_negatives` sampled negatives per positive with label 0,
  in an order drawn from (`seed`, `epoch`): the same arguments give the same examples. Negatives and
  order come from separate streams (`random_streams.NEGATIVES`, `random_streams.SHUFFLE`).
  """
  n = tf.size(items)
  negatives = sample_negatives(
      local_users, positive_mask, num_negatives=num_negatives,
      seed=random_streams.stream_seed(seed, random_streams.NEGATIVES, epoch))
  users = tf.concat([local_users, tf.repeat(local_users, num_negatives)], 0)
  all_items = tf.concat([items, negatives], 0)
  labels = tf.concat([tf.ones([n]), tf.zeros([n * num_negatives])], 0)
  order = tf.argsort(tf.random.stateless_uniform(
      [n * (1 + num_negatives)], random_streams.stream_seed(seed, random_streams.SHUFFLE, epoch)))
  return tf.gather(users, order), tf.gather(all_items, order), tf.gather(labels, order)


class RoundExamples(NamedTuple):
  """All epochs' examples of one client's local training, in step order, and its step schedule.

  `users`, `items`: int32[epochs * E], `labels`: float32[epochs * E] (E = n (1 + N) examples per
  epoch, `epoch_examples`); a step's batch is `batch(step)`, which never crosses an epoch.
  """

  users: tf.Tensor
  items: tf.Tensor
  labels: tf.Tensor
  per_epoch: tf.Tensor  # E
  steps_per_epoch: tf.Tensor
  total_steps: tf.Tensor
  batch_size: int

  def batch(self, step):
    """(start, end) of the examples of step `step` (0-based)."""
    epoch, within = step // self.steps_per_epoch, step % self.steps_per_epoch
    start = epoch * self.per_epoch + within * self.batch_size
    return start, tf.minimum(start + self.batch_size, (epoch + 1) * self.per_epoch)


def round_examples(local_users, positives, *, num_users, num_items, epochs: int, batch_size: int,
                   num_negatives: int, seed, excluded_items=None) -> RoundExamples:
  """Draws every epoch's examples up front (`epoch_examples`) for the local loops of every model.

  Args:
    local_users, positives: int32[n] the client's training positives.
    num_users, num_items: U_k and I (scalars), the shape of the client's positive mask.
    excluded_items: int32[C] items never drawn as negatives (cold items), or None. They join the
      positive mask of the draw only, so with none (or an empty list) the draws are unchanged.
  """
  n = tf.size(positives)
  positive_mask = tf.scatter_nd(
      tf.stack([local_users, positives], axis=1), tf.ones([n], tf.int32), [num_users, num_items]
  ) > 0
  if excluded_items is not None:
    excluded = tf.scatter_nd(tf.reshape(excluded_items, [-1, 1]), tf.ones_like(excluded_items),
                             [num_items]) > 0
    positive_mask = tf.logical_or(positive_mask, excluded[None, :])
  per_epoch = n * (1 + num_negatives)
  steps_per_epoch = (per_epoch + batch_size - 1) // batch_size
  drawn = [epoch_examples(local_users, positives, positive_mask, epoch=epoch, seed=seed,
                          num_negatives=num_negatives) for epoch in range(epochs)]
  return RoundExamples(
      users=tf.concat([e[0] for e in drawn], 0), items=tf.concat([e[1] for e in drawn], 0),
      labels=tf.concat([e[2] for e in drawn], 0), per_epoch=per_epoch,
      steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs, batch_size=batch_size)


def train_local(
    user_embeddings: tf.Tensor,
    params: tf.Tensor,
    rows: tf.Tensor,
    coefficients: tf.Tensor,
    local_users: tf.Tensor,
    items: tf.Tensor,
    seed: tf.Tensor,
    *,
    epochs: int,
    batch_size: int,
    num_negatives: int,
    learning_rate: float,
    weight_decay: float,
    excluded_items: tf.Tensor | None = None,
    item_offsets: tf.Tensor | None = None,
):
  """Minimises Eq. 3 on one client's data with row-sparse Adam.

  `excluded_items` (int32[C], cold items) are never drawn as negatives (`round_examples`).

  All epochs' examples are drawn first; the steps then train a compact copy of just the parameter
  rows those examples use (`float32[P_touched, d]`, with its Adam moments) and the result is scattered
  into `params` once at the end. Row-sparse Adam never changes a row no batch touches, so this is the
  same computation as stepping on the whole table, without copying the whole table and both moments
  at every step (which made a client's cost grow with the number of items).

  Args:
    user_embeddings: float32[U_k, d] the client's private user table.
    params: float32[P, d] item parameters (item table, or flattened codebooks).
    rows, coefficients: int32[I, R], float32[I, R] the item parameterisation (see module docstring).
    local_users, items: int32[n] the client's training positives.
    seed: int32[2] stateless seed for negatives and shuffling.
    item_offsets: float32[I, d] frozen item vectors, or None. With them an item is its offset plus
      its parameterised vector in the last n coordinates (`params: float32[P, n]`, n <= d, padded
      with d - n zeros in front): AlphaFuse's language part and null-space ID part. Not trained.

  Returns:
    (user_embeddings, params, mean_loss: float32, trained_items: bool[I]) where `trained_items` marks
    every item that appeared in a batch (positives and sampled negatives).
  """
  num_users = tf.shape(user_embeddings)[0]
  num_items = tf.shape(rows)[0]
  rows = tf.convert_to_tensor(rows, tf.int32)
  coefficients = tf.convert_to_tensor(coefficients, tf.float32)
  num_terms = rows.shape[1] if rows.shape[1] is not None else tf.shape(rows)[1]
  d = tf.shape(params)[1]  # the width of a parameter row (n with item offsets)
  examples = round_examples(local_users, items, num_users=num_users, num_items=num_items,
                            epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                            seed=seed, excluded_items=excluded_items)
  users, batch_items, labels = examples.users, examples.items, examples.labels
  trained = tf.scatter_nd(batch_items[:, None], tf.ones_like(batch_items), [num_items]) > 0
  # The parameter rows any example uses, and each example's rows as positions in that compact table.
  touched, compact_rows = tf.unique(tf.reshape(tf.gather(rows, batch_items), [-1]))
  compact_rows = tf.reshape(compact_rows, [-1, num_terms])
  example_coef = tf.gather(coefficients, batch_items)

  def body(step, users_t, um, uv, params_t, pm, pv, loss_sum):
    start, end = examples.batch(step)
    bu, by = users[start:end], labels[start:end]
    item_rows = tf.reshape(compact_rows[start:end], [-1])
    item_coef = example_coef[start:end]
    u = tf.gather(users_t, bu)
    p = tf.gather(params_t, item_rows)
    with tf.GradientTape() as tape:
      tape.watch([u, p])
      vec = combine_rows(item_coef, tf.reshape(p, [end - start, num_terms, d]))
      if item_offsets is not None:
        vec = tf.gather(item_offsets, batch_items[start:end]) + tf.pad(
            vec, [[0, 0], [tf.shape(u)[1] - d, 0]])
      logits = tf.reduce_sum(u * vec, axis=1)
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=by, logits=logits))
    grad_u, grad_p = tape.gradient(loss, [u, p])
    t = tf.cast(step + 1, tf.float32)
    users_t, um, uv = row_sparse_adam(
        users_t, um, uv, bu, grad_u, step=t, learning_rate=learning_rate, weight_decay=weight_decay,
        in_place=True,
    )
    params_t, pm, pv = row_sparse_adam(
        params_t, pm, pv, item_rows, grad_p, step=t, learning_rate=learning_rate,
        weight_decay=weight_decay, in_place=True,
    )
    return step + 1, users_t, um, uv, params_t, pm, pv, loss_sum + loss

  users_t, params, _, mean_loss = train_compact(
      body, users=user_embeddings, table=params, touched=touched, total_steps=examples.total_steps)
  return users_t, params, mean_loss, trained


def identity_parameterisation(num_items: int):
  """(rows int32[I, 1], coefficients float32[I, 1]) for a plain ID-indexed item table."""
  return tf.range(num_items)[:, None], tf.ones([num_items, 1])

"""RLMRec's alignment of collaborative and language representations, on the MF backbone.

RLMRec (Ren et al., WWW 2024, "Representation Learning with Large Language Models for Recommendation",
Sec. 3.3; official code `HKUDS/RLMRec`: `encoder/models/general_cf/lightgcn_plus.py` for the
contrastive variant, `lightgcn_gene.py` for the generative one, `encoder/models/loss_utils.py` for the
losses) adds to a collaborative model's loss a term that aligns each user's and item's embedding with an
embedding of its text profile s (`usrprf_embeds`, `itmprf_embeds`):

- contrastive (`kd_loss`): a projector sigma(s) = W2 LeakyReLU(W1 s + b1) + b2, W1: [d_l, h],
  W2: [h, d], h = (d_l + d) // 2, maps profiles to the collaborative space, and each embedding is
  pulled to its own projected profile by InfoNCE (`cal_infonce_loss`):

      infonce(x, y; Y) = sum_b [ -cos(x_b, y_b) / t + log sum_{y' in Y} exp(cos(x_b, y') / t) ]
      kd = kd_weight / B * ( infonce(users_b, sigma(s_users_b); sigma(s of all users))
                             + infonce(items_b, sigma(s_items_b); sigma(s of the batch's items)) )

- generative (`recon_loss`): a decoder g(e) = W2 LeakyReLU(W1 e + b1) + b2, W1: [d, h], W2: [h, d_l],
  reconstructs the profiles of a random `mask_ratio` of the nodes (users and items) from their
  embeddings, scored by the mean InfoNCE over those nodes (`ssl_con_loss`, temperature t):

      recon = recon_weight * mean_n -log( exp(cos(g(e_n), s_n) / t) / sum_m exp(cos(g(e_n), s_m) / t) )

`train_local` trains, on one client, the user and item tables of MF (BCE with sampled negatives, as
`mf.train_local`) plus one of these terms, with row-sparse Adam on the tables and dense Adam on the
projector or decoder (`ncf.dense_adam`). Adaptations to the MF backbone, each a choice:
- The official models are graph encoders trained with BPR over (user, positive, negative) triples; here
  a batch is MF's (user, item, label) examples, so the items' InfoNCE runs once over the batch's items
  (positives and negatives together) instead of once over the positives and once over the negatives.
- RLMRec-Gen masks the chosen nodes (a learned mask token in place of their embeddings) and
  reconstructs their profiles from what graph propagation brings from their neighbours. MF has no
  propagation: a masked node's embedding would be the mask token alone, the same for every masked node,
  and nothing could be reconstructed from it. Here each step reconstructs the chosen nodes' profiles
  from their own embeddings, with no masking; they are drawn among the nodes the client trains this round
  (its users and the items of its examples).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rqfed import random_streams
from tff_rqfed.models import mf
from tff_rqfed.models import ncf

VARIANTS = ('con', 'gen')
_NEGATIVE_SLOPE = 0.01  # torch.nn.LeakyReLU's default
_MASK_STREAM = 11  # random_streams index of the generative variant's node draws (per step)


def mlp_shapes(variant: str, *, embedding_dim: int, profile_dim: int) -> list[tuple[int, ...]]:
  """Shapes of the projector (con: d_l -> h -> d) or decoder (gen: d -> h -> d_l), h = (d_l + d) // 2:
  [W1, b1, W2, b2]."""
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
  width_in, width_out = (profile_dim, embedding_dim) if variant == 'con' else (embedding_dim, profile_dim)
  hidden = (profile_dim + embedding_dim) // 2
  return [(width_in, hidden), (hidden,), (hidden, width_out), (width_out,)]


def initial_mlp(variant: str, *, embedding_dim: int, profile_dim: int, seed: int) -> list[np.ndarray]:
  """The official initialisation: Xavier-uniform kernels (`_init_weight`) and PyTorch's `nn.Linear`
  bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); float32 arrays in `mlp_shapes` order."""
  rng = np.random.default_rng([seed, 0x4C4D])
  weights = []
  for kernel, bias in zip(*[iter(mlp_shapes(variant, embedding_dim=embedding_dim,
                                            profile_dim=profile_dim))] * 2):
    limit = np.sqrt(6.0 / (kernel[0] + kernel[1]))
    weights.append(rng.uniform(-limit, limit, kernel).astype(np.float32))
    weights.append(rng.uniform(-1, 1, bias).astype(np.float32) / np.sqrt(kernel[0]).astype(np.float32))
  return weights


def apply_mlp(weights, x):
  """float32[B, out] = W2 LeakyReLU(W1 x + b1) + b2 for `x: float32[B, in]`."""
  w1, b1, w2, b2 = weights
  hidden = tf.nn.leaky_relu(tf.matmul(x, w1) + b1, alpha=_NEGATIVE_SLOPE)
  return tf.matmul(hidden, w2) + b2


def _normalise(x):
  """Rows divided by sqrt(1e-8 + |x|^2), as `cal_infonce_loss`."""
  return x / tf.sqrt(1e-8 + tf.reduce_sum(tf.square(x), axis=-1, keepdims=True))


def infonce_sum(x, y, all_y, temperature: float):
  """`cal_infonce_loss`: sum over rows b of -cos(x_b, y_b) / t + log sum_j exp(cos(x_b, all_y_j) / t)."""
  x, y, all_y = _normalise(x), _normalise(y), _normalise(all_y)
  numerator = -tf.reduce_sum(x * y, axis=-1) / temperature
  denominator = tf.reduce_logsumexp(tf.matmul(x, all_y, transpose_b=True) / temperature, axis=-1)
  return tf.reduce_sum(numerator + denominator)


def reconstruction_loss(reconstructed, profiles, temperature: float):
  """`ssl_con_loss`: mean over rows n of -log(exp(cos_nn / t) / (sum_m exp(cos_nm / t) + 1e-8) + 1e-8)."""
  logits = tf.matmul(tf.math.l2_normalize(reconstructed, axis=-1), tf.math.l2_normalize(profiles, axis=-1),
                     transpose_b=True) / temperature
  exp = tf.exp(logits)
  ratio = tf.linalg.diag_part(exp) / (tf.reduce_sum(exp, axis=1) + 1e-8)
  return -tf.reduce_mean(tf.math.log(ratio + 1e-8))


def user_profiles(local_users, items, item_profiles, num_users):
  """float32[U_k, d_l]: each user's profile, the mean of its training positives' item profiles.

  RLMRec's user profiles are LLM summaries of the user's interactions; this is the text-embedding
  counterpart a client computes from its own positives, and it never leaves the client."""
  return tf.math.unsorted_segment_mean(tf.gather(item_profiles, items), local_users, num_users)


def _alignment(variant, weights, *, u, q, bu, bi, chosen, options, user_prof, item_prof):
  """The RLMRec term of one step (module docstring); `u`, `q`: the batch's user and item rows, `bu`,
  `bi`: their positions in the client's tables, `chosen`: (embeddings, profiles) of the gen nodes."""
  if variant == 'con':
    projected_users = apply_mlp(weights, user_prof)
    batch_items = apply_mlp(weights, tf.gather(item_prof, bi))
    total = (infonce_sum(u, tf.gather(projected_users, bu), projected_users, options['temperature'])
             + infonce_sum(q, batch_items, batch_items, options['temperature']))
    return options['weight'] * total / tf.cast(tf.shape(u)[0], tf.float32)
  embeddings, profiles = chosen
  return options['weight'] * reconstruction_loss(apply_mlp(weights, embeddings), profiles,
                                                 options['temperature'])


def train_local(users, items, weights, local_users, positives, seed, *, variant: str,
                item_profiles, options: dict, epochs: int, batch_size: int, num_negatives: int,
                learning_rate: float, weight_decay: float = 0.0, excluded_items=None):
  """BCE with sampled negatives plus RLMRec's alignment term on one client; Adam (row-sparse on the
  tables, dense on the MLP).

  Args:
    users: float32[U_k, d] the client's private user embeddings.
    items: float32[I, d] the shared item table.
    weights: [W1, b1, W2, b2] the shared projector (con) or decoder (gen), `mlp_shapes`.
    local_users, positives: int32[n] the client's training positives.
    seed: int[2] stateless seed (negatives and order as `mf.round_examples`; the gen node draws).
    item_profiles: float32[I, d_l] the items' text profile embeddings (public constants).
    options: {'weight': kd_weight or recon_weight, 'temperature': t, 'mask_ratio': gen only}.
    excluded_items: int32[C] items never drawn as negatives (cold items), or None.

  Returns:
    (users, items, weights, mean_loss: float32) where the loss includes the alignment term.
  """
  users, items = tf.convert_to_tensor(users, tf.float32), tf.convert_to_tensor(items, tf.float32)
  weights = [tf.convert_to_tensor(w, tf.float32) for w in weights]
  num_users, num_items = tf.shape(users)[0], tf.shape(items)[0]
  item_profiles = tf.convert_to_tensor(item_profiles, tf.float32)
  examples = mf.round_examples(local_users, positives, num_users=num_users, num_items=num_items,
                               epochs=epochs, batch_size=batch_size, num_negatives=num_negatives,
                               seed=seed, excluded_items=excluded_items)
  touched, compact_items = tf.unique(examples.items)
  user_prof = user_profiles(local_users, positives, item_profiles, num_users)
  item_prof = tf.gather(item_profiles, touched)  # compact rows' profiles
  nodes_prof = tf.concat([user_prof, item_prof], 0)  # gen: users first, then compact items
  num_nodes = num_users + tf.size(touched)
  num_chosen = tf.maximum(tf.cast(tf.cast(num_nodes, tf.float32) * options.get('mask_ratio', 0.0),
                                  tf.int32), 1)

  def chosen_nodes(step):
    draw = tf.random.stateless_uniform([num_nodes], random_streams.stream_seed(seed, _MASK_STREAM, step))
    return tf.math.top_k(draw, k=num_chosen).indices

  def body(step, users_t, um, uv, items_t, im, iv, loss_sum, dense):
    mlp, m, v = dense
    start, end = examples.batch(step)
    bu, bi, by = examples.users[start:end], compact_items[start:end], examples.labels[start:end]
    chosen = chosen_nodes(step) if variant == 'gen' else tf.zeros([0], tf.int32)
    chosen = tf.sort(chosen)  # users (rows < U_k) first, then items, matching (su ; sq) below
    chosen_users = tf.boolean_mask(chosen, chosen < num_users)
    chosen_items = tf.boolean_mask(chosen, chosen >= num_users) - num_users
    u, q = tf.gather(users_t, bu), tf.gather(items_t, bi)
    su, sq = tf.gather(users_t, chosen_users), tf.gather(items_t, chosen_items)
    with tf.GradientTape() as tape:
      tape.watch([u, q, su, sq] + mlp)
      bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=by, logits=tf.reduce_sum(u * q, axis=1)))
      loss = bce + _alignment(variant, mlp, u=u, q=q, bu=bu, bi=bi,
                              chosen=(tf.concat([su, sq], 0), tf.gather(nodes_prof, chosen)),
                              options=options, user_prof=user_prof, item_prof=item_prof)
    grad_u, grad_q, grad_su, grad_sq, *grad_w = tape.gradient(
        loss, [u, q, su, sq] + mlp, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    t = tf.cast(step + 1, tf.float32)
    users_t, um, uv = mf.row_sparse_adam(
        users_t, um, uv, tf.concat([bu, chosen_users], 0), tf.concat([grad_u, grad_su], 0), step=t,
        learning_rate=learning_rate, weight_decay=weight_decay, in_place=True)
    items_t, im, iv = mf.row_sparse_adam(
        items_t, im, iv, tf.concat([bi, chosen_items], 0), tf.concat([grad_q, grad_sq], 0), step=t,
        learning_rate=learning_rate, weight_decay=weight_decay, in_place=True)
    mlp, m, v = ncf.dense_adam(mlp, m, v, grad_w, step=t, learning_rate=learning_rate,
                               weight_decay=weight_decay)
    return step + 1, users_t, um, uv, items_t, im, iv, loss_sum + loss, [mlp, m, v]

  return mf.train_compact(body, users=users, table=items, touched=touched,
                          total_steps=examples.total_steps, dense=weights)

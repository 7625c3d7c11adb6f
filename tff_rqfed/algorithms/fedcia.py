"""FedCIA: federated collaborative information aggregation (a baseline of Table 2 of the paper).

Han et al., SIGIR 2025, "FedCIA: Federated Collaborative Information Aggregation for Privacy-Preserving
Recommendation"; official code `Mingzhe-Han/FedCIA` (`flalgorithm/fedcia_param.py` for the round,
`flalgorithm/fedavg.py` for the loop, `model/MF.py` for the MF base model, `config/ml100k/fedmf.ini`
for the options). Clients keep BOTH their user and item embeddings private. Every round each client
trains its MF locally (`train_client_model`), uploads its item-item similarity E E^T plus Laplace noise
(`client_upload`: Laplace(0, 0.001) on every entry), the server averages the uploads without weights
(`server_filter / client_num`), and each client aligns its private item table to the average with 100
SGD steps on ||E E^T - S||_F (`client_download`, lr `agg_lr` = 0.1, weight decay 1e-6). Nothing
indexed by item id leaves the client except the I x I similarity: I^2 values up and down per client
per round (2,829,124 on ML-100k, 13,734,436 on ML-1M).

The alignment is computed exactly but without any I x I x d product inside its loop
(`models.similarity_alignment`): the server takes one `eigh` of the mean similarity's symmetric part per
round (`server_update`) and broadcasts it as (eigenvectors, eigenvalues, the squared norm of its
antisymmetric part), the same information as S in I^2 + I + 1 values. The steps then cost two
I x d x d products each (`benchmarks.fedcia_alignment` for the measured cost).

Adaptations to our protocol (each one for the same footing as FedMF and RQFedRec):
- Local training: FedMF's (`client_work.train_on_items`: Adam, BCE over each positive and
  `training.num_negatives` sampled negatives, `training.epochs` local epochs of `training.batch_size`)
  on the client's private user and item tables, as `mf_local`. The released MF loss is an MSE of the
  element-wise product of user and item vectors against 1 and 0 (`MF.loss`), which is not the
  dot-product score it ranks with; we keep FedMF's loss so that FedCIA differs from FedMF and mf_local
  by its aggregation alone.
- Order within a round: a client first aligns to the mean similarity of the previous round, then
  trains and uploads (round 1 skips the alignment: there is no mean yet). The released loop does
  train, upload, align in one round, so the sequence of operations is the same; the difference is the
  point of evaluation: we evaluate after a round's training, the released code after its alignment.
- Aggregation: unweighted mean (`tff.aggregators.UnweightedMeanFactory`), as the released code.
- Alignment options: `align_steps` (default 100), `align_learning_rate` (0.1), weight decay
  `training.weight_decay` (the released code uses the model's weight decay for both, 1e-6 there);
  `noise_scale` (0.001) the Laplace scale of the upload's noise. The released `fast_com` (an SVD
  truncation of the upload to rank d, off by default) is not implemented.
- Initialisation: user and item tables N(0, init_scale^2) as FedMF's (the released model: std 0.1).
- Evaluation: each user with its own embedding and its client's private item table, as mf_local.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import random_streams
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import privacy
from tff_rqfed.federated import process
from tff_rqfed.models import mf
from tff_rqfed.models import similarity_alignment

DEFAULT_ALIGN_STEPS = 100  # client_download: `for _ in range(100)`
DEFAULT_ALIGN_LEARNING_RATE = 0.1  # config/ml100k/fedmf.ini: agg_lr
DEFAULT_NOISE_SCALE = 0.001  # client_upload: Laplace(0, 0.001)


def client_update(payload, client_state, data, *, training: cw.LocalTraining, align_steps: int,
                  align_learning_rate: float, noise_scale: float):
  """One FedCIA client round: align to the broadcast similarity, train, upload E E^T + noise.

  Args:
    payload: OrderedDict(eigenvectors=float32[I, I], eigenvalues=float32[I],
      antisymmetric_sq_norm=float32[], round_num=int32[]) (`similarity_alignment.SpectralTarget` of
      the previous round's mean similarity; round_num 0: no mean yet).
    client_state: OrderedDict(user_embeddings=float32[U_k, d], item_embeddings=float32[I, d]).
    data: the client's positives and seed (`process.client_data_type`).
  """
  target = similarity_alignment.SpectralTarget(
      payload['eigenvectors'], payload['eigenvalues'], payload['antisymmetric_sq_norm'])
  items, alignment_loss = tf.cond(
      payload['round_num'] > 0,
      lambda: similarity_alignment.align(
          client_state['item_embeddings'], target, steps=align_steps,
          learning_rate=align_learning_rate, weight_decay=training.weight_decay),
      lambda: (client_state['item_embeddings'], tf.constant(0.0)))
  rows, coefficients = mf.identity_parameterisation(tf.shape(items)[0])
  users, items, loss, _ = cw.train_on_items(
      client_state['user_embeddings'], items, rows, coefficients, data, training)
  similarity = tf.matmul(items, items, transpose_b=True)
  noise = privacy.laplace_noise(tf.shape(similarity), scale=noise_scale, seed=random_streams.stream_seed(
      data['seed'], random_streams.LAPLACE_NOISE))
  return process.ClientOutput(
      upload=similarity + noise, weight=cw.example_weight(data),
      client_state=collections.OrderedDict(user_embeddings=users, item_embeddings=items),
      metrics=cw.metrics(loss=loss, alignment_loss=alignment_loss))


def _validate(num_items, embedding_dim, init_scale, align_steps, align_learning_rate, noise_scale):
  cw.check_table_options(num_items=num_items, embedding_dim=embedding_dim, init_scale=init_scale)
  if not (isinstance(align_steps, int) and align_steps >= 0):
    raise ValueError(f'align_steps must be an integer >= 0, got {align_steps!r}')
  cw.check_positive('align_learning_rate', align_learning_rate)
  cw.check_non_negative('noise_scale', noise_scale)


def build_fedcia(
    *,
    num_items: int,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    align_steps: int = DEFAULT_ALIGN_STEPS,
    align_learning_rate: float = DEFAULT_ALIGN_LEARNING_RATE,
    noise_scale: float = DEFAULT_NOISE_SCALE,
) -> process.RecommenderProcess:
  """Builds FedCIA as a `RecommenderProcess` (unweighted mean of the uploaded similarities).

  Args:
    align_steps: SGD steps of the alignment per client per round (the released code: 100).
    align_learning_rate: their learning rate (the released `agg_lr`: 0.1).
    noise_scale: Laplace scale of the noise on every uploaded similarity entry (released: 0.001).
  """
  _validate(num_items, embedding_dim, init_scale, align_steps, align_learning_rate, noise_scale)
  d = embedding_dim
  similarity_type = tff.TensorType(np.float32, [num_items, num_items])
  client_state_type = cw.private_tables_type(num_items, d)
  state_type = tff.types.to_type(collections.OrderedDict(
      eigenvectors=similarity_type, eigenvalues=tff.TensorType(np.float32, [num_items]),
      antisymmetric_sq_norm=tff.TensorType(np.float32), round_num=tff.TensorType(np.int32)))

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    return state

  @tff.tensorflow.computation(state_type, similarity_type)
  def server_update(state, mean_similarity):
    target = similarity_alignment.spectral_target(mean_similarity)
    return collections.OrderedDict(
        eigenvectors=target.eigenvectors, eigenvalues=target.eigenvalues,
        antisymmetric_sq_norm=target.antisymmetric_sq_norm, round_num=state['round_num'] + 1)

  client_fn = functools.partial(
      client_update, training=training, align_steps=align_steps,
      align_learning_rate=float(align_learning_rate), noise_scale=float(noise_scale))
  initial_state = collections.OrderedDict(
      eigenvectors=np.eye(num_items, dtype=np.float32), eigenvalues=np.zeros(num_items, np.float32),
      antisymmetric_sq_norm=np.float32(0), round_num=np.int32(0))

  def initial_client_states(clients):
    return cw.initial_private_tables(clients, num_items=num_items, embedding_dim=d,
                                     init_scale=init_scale, seed=seed)

  def scores(state, client_states, clients, num_users):
    del state  # each user is scored with its client's private item table
    return cw.private_table_scores(client_states, clients, num_users, num_items)

  return process.build_recommender_process(
      name='fedcia', initial_state=initial_state, server_state_type=state_type,
      client_state_type=client_state_type, server_payload=server_payload, client_fn=client_fn,
      server_update=server_update, initial_client_states=initial_client_states, scores=scores,
      aggregator=tff.aggregators.UnweightedMeanFactory())

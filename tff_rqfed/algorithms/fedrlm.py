"""FedRLM_con and FedRLM_gen: FedMF with RLMRec's language alignment (Table 5 of the paper, Sec. 6.3.2).

RLMRec (Ren et al., WWW 2024; official code `HKUDS/RLMRec`, `encoder/models/general_cf/lightgcn_plus.py`
and `lightgcn_gene.py`) aligns collaborative embeddings with text-profile embeddings, contrastively
(a projector from profiles to embeddings, InfoNCE) or generatively (a decoder from embeddings to
profiles, InfoNCE); `models.rlm_alignment` writes both out. FedRLM is FedMF trained with that extra
term: every round the server broadcasts the item table float32[I, d] and the projector or decoder
[W1, b1, W2, b2]; each client trains its private user embeddings and both shared parts on its
positives and sampled negatives plus the alignment term, uploads the shared parts, and the server
takes their mean weighted by |D_k| (the FedAvg of the FedCIA framework the paper's baselines share:
every parameter but the users' is shared).

Adaptations to our protocol, each a choice:
- Backbone and loss: MF with BCE and sampled negatives, as every method here (RLMRec's encoders are
  graph models trained with BPR); the changes this brings to each term are in `models.rlm_alignment`.
- Profiles: the items' profile embeddings are their text embeddings, the ones RQFedRec's semantic ids
  come from (`semantic.encoders`, USE, d_l = 512; RLMRec embeds LLM-written profiles with
  text-embedding-ada-002, d_l = 1536). A user's profile is the mean of its training positives'
  embeddings, computed on its client and never sent (RLMRec's are LLM summaries of the interactions).
- Options default to the official top-level configuration (`encoder/config/modelconf/lightgcn_plus.yml`:
  kd_weight 0.01, kd_temperature 0.2; `lightgcn_gene.yml`: recon_weight 0.1, re_temperature 0.2,
  mask_ratio 0.1); learning rate, weight decay and initialisation are FedMF's, as for every method.
- Communication: the item table and the MLP each way, I d + d_l h + h + h d + d values per client per
  round with h = (d_l + d) // 2 (Table 4's accounting reads it from the TFF types); at d = d_l = 512
  the MLP adds 525,312 values to FedMF's 861,184 on ML-100k.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow_federated as tff

from tff_rqfed import devices
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import rlm_alignment

VARIANTS = rlm_alignment.VARIANTS
# The algorithm names the launcher and the benchmarks take, each with its variant.
ALGORITHM_VARIANTS = {f'fedrlm_{variant}': variant for variant in VARIANTS}
# The official top-level values (module docstring): (weight, temperature, mask_ratio) per variant.
DEFAULT_OPTIONS = {'con': {'weight': 0.01, 'temperature': 0.2},
                   'gen': {'weight': 0.1, 'temperature': 0.2, 'mask_ratio': 0.1}}


def client_update(shared, user_embeddings, data, *, variant: str, item_profiles: np.ndarray,
                  options: dict, training: cw.LocalTraining):
  """One client's round: MF plus the alignment term; uploads the item table and the MLP.

  Args:
    shared: the broadcast, OrderedDict(items=float32[I, d], mlp=[W1, b1, W2, b2]).
    user_embeddings: float32[U_k, d] the client's private users.
    data: the client's positives and seed (`process.client_data_type`).
  """
  users, items, mlp, loss = rlm_alignment.train_local(
      user_embeddings, shared['items'], list(shared['mlp']), data['local_users'], data['items'],
      data['seed'], variant=variant, item_profiles=item_profiles, options=options,
      epochs=training.epochs, batch_size=training.batch_size, num_negatives=training.num_negatives,
      learning_rate=training.learning_rate, weight_decay=training.weight_decay,
      excluded_items=data['excluded_items'])
  return process.ClientOutput(upload=collections.OrderedDict(items=items, mlp=mlp),
                              weight=cw.example_weight(data), client_state=users,
                              metrics=cw.metrics(loss=loss))


def check_options(variant: str, options: dict) -> dict:
  """The variant's defaults updated by `options`, each checked (one-line errors quoting the value)."""
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
  unknown = set(options) - set(DEFAULT_OPTIONS[variant])
  if unknown:
    raise ValueError(f'FedRLM_{variant} has no option {sorted(unknown)!r}; it takes '
                     f'{sorted(DEFAULT_OPTIONS[variant])}')
  merged = {**DEFAULT_OPTIONS[variant], **options}
  cw.check_non_negative(f'FedRLM_{variant} weight', merged['weight'])
  cw.check_positive(f'FedRLM_{variant} temperature', merged['temperature'])
  if variant == 'gen' and not 0 < merged['mask_ratio'] <= 1:
    raise ValueError(f"FedRLM_gen mask_ratio must be in (0, 1], got {merged['mask_ratio']!r}")
  return merged


def build_fedrlm(
    *,
    variant: str,
    num_items: int,
    profile_embeddings: np.ndarray,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    **options,
) -> process.RecommenderProcess:
  """FedRLM_con (`variant='con'`) or FedRLM_gen (`'gen'`) as a `RecommenderProcess`.

  `profile_embeddings: float[I, d_l]` are the items' text embeddings; `options` override
  `DEFAULT_OPTIONS[variant]` (weight, temperature, and mask_ratio for gen).
  """
  options = check_options(variant, options)
  cw.check_table_options(num_items=num_items, embedding_dim=embedding_dim, init_scale=init_scale)
  profiles = np.asarray(profile_embeddings, np.float32)
  if profiles.ndim != 2 or profiles.shape[0] != num_items:
    raise ValueError(f'profile_embeddings must be float[num_items={num_items}, d_l], got shape '
                     f'{profiles.shape}')
  shapes = rlm_alignment.mlp_shapes(variant, embedding_dim=embedding_dim, profile_dim=profiles.shape[1])
  shared_type = tff.types.to_type(collections.OrderedDict(
      items=tff.TensorType(np.float32, [num_items, embedding_dim]),
      mlp=[tff.TensorType(np.float32, shape) for shape in shapes]))
  server = process.shared_value_server('shared', shared_type)

  initial_state = collections.OrderedDict(
      shared=collections.OrderedDict(
          items=cw.initial_item_embeddings(num_items, embedding_dim=embedding_dim,
                                           init_scale=init_scale, seed=seed),
          mlp=rlm_alignment.initial_mlp(variant, embedding_dim=embedding_dim,
                                        profile_dim=profiles.shape[1], seed=seed)),
      round_num=np.int32(0))

  def initial_client_states(clients):
    return cw.initial_user_embeddings(clients, embedding_dim=embedding_dim, init_scale=init_scale,
                                      seed=seed)

  def item_embeddings(state):
    return np.asarray(state['shared']['items'])

  def scores(state, client_states, clients, num_users):
    users = cw.stack_users(client_states, clients, num_users, embedding_dim)
    return devices.score_matrix(users, item_embeddings(state))

  return process.build_recommender_process(
      name=f'fedrlm_{variant}', initial_state=initial_state, server_state_type=server.state_type,
      client_state_type=cw.user_state_type(embedding_dim), server_payload=server.server_payload,
      client_fn=functools.partial(client_update, variant=variant, item_profiles=profiles,
                                  options=options, training=training),
      server_update=server.server_update, initial_client_states=initial_client_states, scores=scores,
      item_embeddings=item_embeddings)

"""FedAlphaFuse: FedMF over AlphaFuse's item embeddings (Table 5 of the paper, Sec. 6.3.2).

AlphaFuse (Hu et al., SIGIR 2025, "AlphaFuse: Learn ID Embeddings for Sequential Recommendation in
Null Space of Language Embeddings"; official code `Hugo-Chinn/AlphaFuse`, `models/embedding.py` and
`Item_Embedding` in `models/backbone_SASRec.py`) builds an item's embedding from its language
embedding and a learned ID embedding that lives where the language embeddings have least variance:

    E = the items' language embeddings, float32[I, d_l];  mu = their mean over items
    U, S = SVD(cov(E - mu))                      (d_l x d_l; S, the variances, in descending order)
    language_i = (e_i - mu) U[:, :d] diag(S[:d])^(-1/2)     standardised: unit variance per axis, frozen
    f_i = language_i + [0, ..., 0, id_i]         id_i in R^n on the last n = null_dim axes (`cover=False`)

(`language_part`). FedAlphaFuse is FedMF with f_i as the item embedding: the ID table float32[I, n]
is the only shared parameter; the server broadcasts it, every client trains it with its private user
embeddings (Eq. 3, `client_work.train_on_items` with the language part as frozen item offsets),
uploads it, and the server takes the mean weighted by |D_k|.

Adaptations to our protocol, each a choice:
- Backbone and loss: MF with BCE and sampled negatives, as every method here (the official code trains
  SASRec with InfoNCE at temperature 0.07 over sampled negatives).
- The language embeddings are the item-text embeddings RQFedRec's semantic ids come from
  (`semantic.encoders`, USE, d_l = 512), so d <= d_l; the official default `language_embs_scale`
  (40) cancels in the standardisation and is not applied.
- `null_dim` n = 64 and ID initialisation `zeros` by default: the official default `null_dim` and the
  initialisation its README gives for the movie datasets (`normal`, N(0, 1), is the official default
  elsewhere). A variance below 1e-12 of the largest is floored there, so a rank-deficient E gives no
  division by zero (the official code divides unguarded).
- Not standardised by default (`standardize=False`), unlike the official default, chosen on validation
  (ML-100k, seed 0, lr 0.01): standardised, each of the 448 frozen axes gets unit variance and the
  users memorise their positives through them (training loss 0.09, validation NDCG@10 0.076, test
  recall@10 0.050, below MostPop); unstandardised, each axis keeps its variance, the 64 shared ID axes
  carry the collaborative signal (validation 0.203, test recall@10 0.153).
- The language part is public and fixed: every client computes it once (it is a constant of the
  client computation, like RQFedRec's semantic ids) and it is never sent per round, so a round moves
  the I x n ID table each way (Table 4's accounting reads it from the TFF types).
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import devices
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process
from tff_rqfed.models import mf

DEFAULT_NULL_DIM = 64
ID_INITS = ('zeros', 'normal')
_MIN_RELATIVE_VARIANCE = 1e-12


def language_part(language_embeddings: np.ndarray, *, embedding_dim: int,
                  standardize: bool = True) -> np.ndarray:
  """float32[I, d]: the projection of `language_embeddings: float[I, d_l]` on their top-d principal
  axes (module docstring), in descending order of variance; standardised (the official
  `standardization`, its default) or not."""
  e = np.asarray(language_embeddings, np.float64)
  if e.ndim != 2 or embedding_dim > e.shape[1]:
    raise ValueError(f'embedding_dim ({embedding_dim}) must not exceed the language embeddings\' '
                     f'width; got embeddings of shape {e.shape}')
  centred = e - e.mean(axis=0)
  u, variances, _ = np.linalg.svd(np.cov(centred, rowvar=False))
  axes = u[:, :embedding_dim]
  if standardize:
    axes = axes / np.sqrt(np.maximum(variances[:embedding_dim], _MIN_RELATIVE_VARIANCE * variances[0]))
  return (centred @ axes).astype(np.float32)


def item_table(language, id_table) -> np.ndarray:
  """float32[I, d] = language + the ID table float32[I, n] on the last n axes."""
  language = np.asarray(language, np.float32)
  table = language.copy()
  table[:, language.shape[1] - np.shape(id_table)[1]:] += np.asarray(id_table, np.float32)
  return table


def client_update(id_table, user_embeddings, data, *, language: np.ndarray, training: cw.LocalTraining):
  """Eq. 3 on f_i = language_i + [0; id_i]: trains the users and the ID table `float32[I, n]`, uploads
  the table."""
  rows, coefficients = mf.identity_parameterisation(tf.shape(id_table)[0])
  users, ids, loss, _ = cw.train_on_items(user_embeddings, id_table, rows, coefficients, data, training,
                                          item_offsets=tf.constant(language))
  return process.ClientOutput(upload=ids, weight=cw.example_weight(data), client_state=users,
                              metrics=cw.metrics(loss=loss))


def _initial_ids(num_items: int, null_dim: int, id_init: str, seed: int) -> np.ndarray:
  if id_init == 'zeros':
    return np.zeros((num_items, null_dim), np.float32)
  return np.random.default_rng([seed, 0xA1FA]).normal(size=(num_items, null_dim)).astype(np.float32)


def build_fedalphafuse(
    *,
    num_items: int,
    language_embeddings: np.ndarray,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    init_scale: float = 0.1,
    seed: int = 0,
    null_dim: int = DEFAULT_NULL_DIM,
    id_init: str = 'zeros',
    standardize: bool = False,
) -> process.RecommenderProcess:
  """FedAlphaFuse (module docstring) as a `RecommenderProcess`; `language_embeddings: float[I, d_l]`
  are the items' text embeddings, d = `embedding_dim` <= d_l, n = `null_dim` <= d."""
  cw.check_table_options(num_items=num_items, embedding_dim=embedding_dim, init_scale=init_scale)
  if not 1 <= null_dim <= embedding_dim:
    raise ValueError(f'null_dim must be in [1, embedding_dim={embedding_dim}], got {null_dim!r}')
  if id_init not in ID_INITS:
    raise ValueError(f'id_init must be one of {ID_INITS}, got {id_init!r}')
  if np.shape(language_embeddings)[0] != num_items:
    raise ValueError(f'language_embeddings has {np.shape(language_embeddings)[0]} rows for '
                     f'{num_items} items')
  language = language_part(language_embeddings, embedding_dim=embedding_dim, standardize=standardize)
  ids_type = tff.TensorType(np.float32, [num_items, null_dim])
  server = process.shared_value_server('id_table', ids_type)

  def initial_client_states(clients):
    return cw.initial_user_embeddings(clients, embedding_dim=embedding_dim, init_scale=init_scale,
                                      seed=seed)

  def item_embeddings(state):
    return item_table(language, state['id_table'])

  def scores(state, client_states, clients, num_users):
    users = cw.stack_users(client_states, clients, num_users, embedding_dim)
    return devices.score_matrix(users, item_embeddings(state))

  return process.build_recommender_process(
      name='fedalphafuse',
      initial_state=collections.OrderedDict(
          id_table=_initial_ids(num_items, null_dim, id_init, seed), round_num=np.int32(0)),
      server_state_type=server.state_type, client_state_type=cw.user_state_type(embedding_dim),
      server_payload=server.server_payload,
      client_fn=functools.partial(client_update, language=language, training=training),
      server_update=server.server_update, initial_client_states=initial_client_states, scores=scores,
      item_embeddings=item_embeddings)

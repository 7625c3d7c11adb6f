"""RQFedRec: feature-indexed federated recommendation with residual-quantised codebooks (Alg. 1).

One round (Alg. 1, lines 4-16):

* server -> clients: dual-channel codebooks `float32[2, L, M, d]`, semantic and collaborative code ids
  `int32[I, L]` each, and the round's collaborative rate lambda_t (Eq. 10);
* client work (`tff.tensorflow.computation`): rebuild every item embedding from codebooks and ids
  (Eq. 9), train user embeddings and items on D_k (Eq. 3), add Laplace noise of scale delta (Eq. 11),
  fit both codebooks to the client's items by MSE with ids and item embeddings frozen (Eq. 6, 7), return
  the codebooks and |D_k|;
* aggregation: `tff.federated_mean` of the codebooks weighted by |D_k| (Eq. 8);
* server program logic between rounds (`after_round`, in Python so RQ-kmeans can use a GPU): every tau
  rounds rebuild the collaborative ids by RQ-kmeans on the normalised reconstructed item embeddings
  (Sec. 4.3.2), and set lambda for the next round (Eq. 10, 0 until collaborative ids exist, Sec. 4.4).

Options beyond the paper's text, each measured (see the README's results):
* `codebook_fit`: Eq. 7 minimised by exact block coordinate descent with a ridge towards the global
  codebooks (`blockwise`, `codebooks.fit_codebooks_blockwise`) or by full-batch Adam (`adam`).
* `codebook_items`: fit Eq. 7 over the client's positives (`positives`, the paper's I_k) or over every
  item the round trained, positives and sampled negatives (`trained`).
* `refresh_values`: after a refresh, the collaborative codebook is either the k-means centres of the
  normalised embeddings (`centres`, the paper read literally: wrong scale, the item table jumps) or the
  exact least-squares codebook that reproduces the current item embeddings under the new ids
  (`lstsq`), so a refresh keeps what was learned. `after_round` reports the relative change.
* `warmup_from`: lambda = min(1, t/T_warm) (`zero`, Eq. 10) or min(1, (t - t_first_refresh)/T_warm)
  (`first_refresh`), which avoids lambda jumping from 0 to t/T_warm at the first refresh.
* `max_collaborative_rate`: lambda = lambda_max * (Eq. 10). With lambda_max = 1 (the paper) the
  semantic channel is switched off after the warm-up and every item lives in the span of the L
  collaborative codes it uses: a round's update outside that span (for ML-100k, 768 code rows for 1682
  items) is lost in the fit. lambda_max < 1 keeps both channels, 2LM rows, in the fit.
* `kmeans_dim`: RQ-kmeans (semantic ids once, collaborative ids at each refresh) runs on the top
  `kmeans_dim` principal components of the normalised embeddings instead of all d dimensions; the
  code values stay d-dimensional. In d = 512, k-means of 1682 points gives many items the same L-code
  tuple (1,200 distinct tuples of the USE embeddings, against 1,653 on 64 components,
  `benchmarks/codebook_span.py`), and items with the same tuple have the same embedding for good.
* `unique_codes`: after RQ-kmeans, items that share a whole L-code tuple move their last-level code
  to the nearest free one (`rq_kmeans.make_codes_unique`). Items with the same collaborative tuple
  have the same embedding once lambda = 1, so each refresh can only merge items: measured at d = 512,
  distinct tuples fall from about 1,540 to 1,030-1,100 of 1,682 items over five refreshes
  (`distinct_collaborative_tuples` in rounds.csv). Measured at d = 512 (seed 0): validation NDCG@10
  0.1945 against 0.1929 without it, within noise, so it is off by default.
* `code_ids='hash'` (Table 6, "hash-based codebook"): each channel's code ids are a fixed hash of the
  item id (`hash_codes`), independent of the text and of training, so the refresh keeps them and only
  re-fits the collaborative code values; the initial code values are the residual means of the
  projected text embeddings under the hashed ids. The paper gives no more detail; this is our reading.
* `code_ids='rq_vae'` (Table 6, "RQ-VAE codebook"): wherever RQ-kmeans would assign ids (the semantic
  ids once, the collaborative ids at each refresh), a small RQ-VAE is trained on the same points (the
  `kmeans_dim` principal components) and its code ids are used (`quantization.rq_vae`); code values
  are the residual means of the d-dimensional points under them, as with `kmeans_dim`.
* Ablations of Fig. 3: `channels='semantic'` (w/o CC), `channels='collaborative'` (w/o SC),
  `fix_collaborative_ids` (Fix CC: ids built at the first refresh and never again),
  `item_embedding=False` (w/o IE: codebooks trained directly on the interactions). `w/o C` is FedMF.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np
from sklearn import decomposition
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import devices
from tff_rqfed import hyperparameters
from tff_rqfed import random_streams
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import privacy
from tff_rqfed.federated import process
from tff_rqfed.models import mf
from tff_rqfed.quantization import codebooks as cb
from tff_rqfed.quantization import rq_kmeans
from tff_rqfed.quantization import rq_vae

CODEBOOK_ITEMS = ('positives', 'trained')
CODEBOOK_FITS = ('blockwise', 'adam')
REFRESH_VALUES = ('lstsq', 'centres')
WARMUP_FROM = ('zero', 'first_refresh')
CHANNELS = ('both', 'semantic', 'collaborative')
SEMANTIC_INITS = ('projection', 'random')
CODE_IDS = ('rq_kmeans', 'hash', 'rq_vae')
PAYLOAD_KEYS = ('codebooks', 'semantic_ids', 'collaborative_ids', 'collaborative_rate')


@dataclasses.dataclass(frozen=True)
class RQConfig:
  """RQFedRec options (Sec. 4, 6.1.4).

  L=3, M=256 (ML-100k), tau=10 are the paper's. T_warm defaults to 20, not the paper's 100: on the
  ML-100k validation set the shorter warm-up was better (docs/RESULTS.md, "Choosing the defaults"); the
  options marked "beyond the paper" in the module docstring were chosen the same way (`kmeans_dim`
  = 64: validation NDCG@10 0.193 against 0.161 with k-means in all 512 dimensions, seed 0; a no-op
  when d <= 64).
  """

  levels: int = 3
  codes_per_level: int = 256
  refresh_every: int = hyperparameters.RQFEDREC_REFRESH_EVERY  # tau (10)
  warmup_rounds: int = hyperparameters.RQFEDREC_WARMUP_ROUNDS  # T_warm (20; paper: 100)
  max_collaborative_rate: float = 1.0  # lambda's ceiling (paper: 1)
  laplace_scale: float = 0.0  # delta of Eq. 11
  laplace_clip: float = 0.0  # L1 bound of each item row before the noise (0: none; privacy.py)
  codebook_items: str = 'trained'
  codebook_fit: str = 'blockwise'
  codebook_sweeps: int = 2  # blockwise
  codebook_ridge: float = 1.0  # blockwise
  codebook_steps: int = 50  # adam
  codebook_learning_rate: float = 0.05  # adam
  refresh_values: str = 'lstsq'
  warmup_from: str = 'first_refresh'
  channels: str = 'both'
  fix_collaborative_ids: bool = False
  item_embedding: bool = True
  semantic_init: str = 'projection'
  kmeans_iterations: int = 50
  kmeans_dim: int = 64  # RQ-kmeans on the top-k principal components; 0 (or >= d): all d dimensions
  unique_codes: bool = False  # no two items share all L codes of a channel (rq_kmeans.make_codes_unique)
  code_ids: str = 'rq_kmeans'  # Table 6: 'hash' (item ids hashed) or 'rq_vae' (rq_vae.rq_vae_codes)

  def __post_init__(self):
    for name, allowed in (('codebook_items', CODEBOOK_ITEMS), ('codebook_fit', CODEBOOK_FITS),
                          ('refresh_values', REFRESH_VALUES),
                          ('warmup_from', WARMUP_FROM), ('channels', CHANNELS),
                          ('semantic_init', SEMANTIC_INITS), ('code_ids', CODE_IDS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {getattr(self, name)!r}')
    for name in ('levels', 'codes_per_level', 'refresh_every'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)!r}')
    if not 0.0 < self.max_collaborative_rate <= 1.0:
      raise ValueError(f'max_collaborative_rate must be in (0, 1], got {self.max_collaborative_rate!r}')
    for name in ('laplace_scale', 'laplace_clip'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)!r}')
    for name in ('codebook_steps', 'codebook_sweeps', 'codebook_ridge', 'kmeans_dim'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)!r}')


def semantic_codebook(text_embeddings, *, config: RQConfig, embedding_dim: int, init_scale: float,
                      seed: int):
  """Fixed semantic ids `int32[I, L]` and initial semantic codebook `float32[L, M, d]` (Sec. 4.3.1).

  Ids come from RQ-kmeans on the text embeddings projected to d dimensions and rescaled so an item
  vector has the norm of the MF initialisation (init_scale * sqrt(d)); the projection is the identity
  when the text dimension equals d, else a seeded Gaussian map, which keeps distances up to scale.
  `semantic_init='projection'` uses the k-means centres of that projection as code values, `'random'`
  draws them N(0, init_scale^2 / L) like an MF table.
  """
  text = np.asarray(text_embeddings, np.float32)
  if text.shape[1] != embedding_dim:
    projection = np.random.default_rng([seed, 3]).normal(
        0.0, 1.0 / np.sqrt(embedding_dim), (text.shape[1], embedding_dim)
    ).astype(np.float32)
    text = text @ projection
  norms = np.linalg.norm(text, axis=1, keepdims=True)
  projected = text / np.maximum(norms, 1e-12) * init_scale * np.sqrt(embedding_dim)
  codes, centres = quantise(projected, config=config, seed=seed)
  if config.semantic_init == 'projection':
    values = centres
  else:
    values = np.random.default_rng([seed, 4]).normal(
        0.0, init_scale / np.sqrt(config.levels), centres.shape
    ).astype(np.float32)
  return codes, values.astype(np.float32)


def hash_codes(num_items: int, *, levels: int, codes_per_level: int, channel: int) -> np.ndarray:
  """int32[I, L] code ids by hashing item ids: a fixed random table per (channel, level), i.e. a
  universal hash of the item id into M buckets, the same for every seed and round."""
  return np.stack([
      np.random.default_rng([0x4A54, channel, level]).integers(0, codes_per_level, num_items)
      for level in range(levels)], axis=1).astype(np.int32)


def quantise(points, *, config: RQConfig, seed: int, channel: int = cb.SEMANTIC):
  """RQ-kmeans (Sec. 3.3) ids `int32[I, L]` and centres `float32[L, M, d]` of `points: float32[I, d]`.

  With 0 < `config.kmeans_dim` < min(I, d) the ids come from RQ-kmeans on the points' top
  `kmeans_dim` principal components (scikit-learn's PCA, exact SVD) and the centres are the residual
  means of the d-dimensional points under those ids. With `config.code_ids='hash'` the ids are
  `hash_codes` of `channel` (the points only give the centres); with `'rq_vae'` they are the code ids
  of an RQ-VAE trained on the (reduced) points.
  """
  points = np.asarray(points, np.float32)
  if config.code_ids == 'hash':
    codes = hash_codes(points.shape[0], levels=config.levels, codes_per_level=config.codes_per_level,
                       channel=channel)
    return codes, rq_kmeans.residual_centres(points, codes, codes_per_level=config.codes_per_level)
  options = dict(levels=config.levels, codes_per_level=config.codes_per_level, seed=seed,
                 iterations=config.kmeans_iterations)
  clustered = points
  if 0 < config.kmeans_dim < min(points.shape):  # PCA has at most min(I, d) components.
    pca = decomposition.PCA(n_components=config.kmeans_dim, svd_solver='full')
    clustered = pca.fit_transform(points).astype(np.float32)
  with devices.stage('semantic_ids' if channel == cb.SEMANTIC else 'rq_kmeans_refresh'):
    if config.code_ids == 'rq_vae':
      codes, _ = rq_vae.rq_vae_codes(clustered, levels=config.levels,
                                     codes_per_level=config.codes_per_level, seed=seed)
      return codes, rq_kmeans.residual_centres(points, codes, codes_per_level=config.codes_per_level)
    result = rq_kmeans.rq_kmeans(clustered, **options)
  codes = result.codes.astype(np.int32)
  if config.unique_codes:
    codes = rq_kmeans.make_codes_unique(clustered, codes, result.centres)
  if clustered is points and not config.unique_codes:
    return codes, result.centres.astype(np.float32)
  return codes, rq_kmeans.residual_centres(points, codes, codes_per_level=config.codes_per_level)


def payload_parameterisation(payload, *, codes_per_level: int):
  """(rows int32[I, 2L], coefficients float32[I, 2L]) of Eq. 6 from the broadcast ids and lambda."""
  return cb.codebook_parameterisation(
      payload['semantic_ids'], payload['collaborative_ids'], payload['collaborative_rate'],
      codes_per_level=codes_per_level)


def rebuild_item_table(payload):
  """Eq. 9: the client's item table float32[I, d] from the broadcast codebooks, ids and lambda."""
  return cb.reconstruct_items(payload['codebooks'], payload['semantic_ids'],
                              payload['collaborative_ids'], payload['collaborative_rate'])


def codebook_fit_items(trained, data, *, num_items: int, config: RQConfig):
  """int32[m] the items I_k whose embeddings the codebooks are fitted to (Eq. 7, `codebook_items`)."""
  if config.codebook_items == 'trained':
    fit_mask = trained
  else:
    fit_mask = tf.scatter_nd(data['items'][:, None], tf.ones_like(data['items']), [num_items]) > 0
  return tf.cast(tf.reshape(tf.where(fit_mask), [-1]), tf.int32)


def fit_client_codebooks(payload, table, fit_items, *, config: RQConfig):
  """Eq. 7: codebooks fitted to `table: float32[I, d]` on `fit_items`, ids frozen.

  Returns:
    (params float32[2LM, d] the flattened fitted codebooks, loss_before, loss_after).
  """
  if config.codebook_fit == 'blockwise':
    fitted, loss_before, loss_after = cb.fit_codebooks_blockwise(
        payload['codebooks'], payload['semantic_ids'], payload['collaborative_ids'],
        payload['collaborative_rate'], table, fit_items,
        sweeps=config.codebook_sweeps, ridge=config.codebook_ridge,
    )
    return cb.flatten(fitted), loss_before, loss_after
  rows, coefficients = payload_parameterisation(payload, codes_per_level=config.codes_per_level)
  return cb.fit_codebooks(
      cb.flatten(payload['codebooks']), rows, coefficients, table, fit_items,
      steps=config.codebook_steps, learning_rate=config.codebook_learning_rate,
  )


def client_update(payload, user_embeddings, data, *, num_items: int, config: RQConfig,
                  training: cw.LocalTraining):
  """One client's round (Alg. 1, lines 7-11): Eq. 9, 3, 11 and 7; returns a `process.ClientOutput`.

  Args:
    payload: the broadcast: codebooks float32[2, L, M, d], semantic_ids and collaborative_ids
      int32[I, L], collaborative_rate float32.
    user_embeddings: float32[U_k, d] the client's private users.
    data: the client's positives and seed (`process.client_data_type`).
  """
  levels, codes = config.levels, config.codes_per_level
  global_params = cb.flatten(payload['codebooks'])
  if config.item_embedding:
    table = rebuild_item_table(payload)  # Eq. 9
    id_rows, id_coef = mf.identity_parameterisation(num_items)
    users, table, loss, trained = cw.train_on_items(  # Eq. 3
        user_embeddings, table, id_rows, id_coef, data, training)
    clipped = tf.constant(0.0)
    if config.laplace_scale > 0:  # Eq. 11, each row clipped first (privacy.perturb_item_table)
      noise_seed = random_streams.stream_seed(data['seed'], random_streams.LAPLACE_NOISE)
      table, clipped = privacy.perturb_item_table(table, scale=config.laplace_scale,
                                                  clip=config.laplace_clip, seed=noise_seed)
    fit_items = codebook_fit_items(trained, data, num_items=num_items, config=config)
    params, code_loss_before, code_loss_after = fit_client_codebooks(  # Eq. 7
        payload, table, fit_items, config=config)
    fitted = tf.size(fit_items)
  else:  # w/o IE: the codebooks are the item parameters of Eq. 3.
    rows, coefficients = payload_parameterisation(payload, codes_per_level=codes)
    users, params, loss, trained = cw.train_on_items(
        user_embeddings, global_params, rows, coefficients, data, training)
    code_loss_before = code_loss_after = clipped = tf.constant(0.0)
    fitted = tf.reduce_sum(tf.cast(trained, tf.int32))
  changed_codes = tf.reduce_sum(
      tf.cast(tf.reduce_any(tf.not_equal(params, global_params), axis=1), tf.int32))
  return process.ClientOutput(
      upload=tf.reshape(params, [2, levels, codes, -1]),
      weight=cw.example_weight(data),
      client_state=users,
      metrics=cw.metrics(
          loss=loss, code_loss_before=code_loss_before, code_loss_after=code_loss_after,
          changed_codes=changed_codes, fitted_items=fitted, clipped_rows=clipped,
      ),
  )


def build_rqfedrec(
    *,
    num_items: int,
    text_embeddings: np.ndarray | None,
    embedding_dim: int = 512,
    training: cw.LocalTraining = cw.LocalTraining(),
    config: RQConfig = RQConfig(),
    init_scale: float = 0.1,
    seed: int = 0,
) -> process.RecommenderProcess:
  """Builds RQFedRec (Alg. 1) as a `RecommenderProcess`.

  Composed of: `client_update` (the clients' work, lines 7-11), the weighted codebook mean (Eq. 8,
  `process.build_round_process`), `server_update`, and the server program logic `CollaborativeRefresh`
  (lines 14-16 and the warm-up of Eq. 10) run between rounds.

  Args:
    num_items: I.
    text_embeddings: float32[I, D] semantic item embeddings (Sec. 4.3.1); may be None only with
      `channels='collaborative'` (w/o SC).
  """
  levels, codes, d = config.levels, config.codes_per_level, embedding_dim
  if num_items < codes:
    raise ValueError(f'codes_per_level={codes} exceeds the number of items {num_items}')
  state_type, payload_type = server_types(num_items=num_items, embedding_dim=d, config=config)
  user_type = cw.user_state_type(d)

  @tff.tensorflow.computation(state_type)
  def server_payload(state):
    return collections.OrderedDict((key, state[key]) for key in PAYLOAD_KEYS)

  client_fn = functools.partial(client_update, num_items=num_items, config=config, training=training)

  @tff.tensorflow.computation(state_type, payload_type.codebooks)
  def server_update(state, mean_codebooks):  # Eq. 8 happened in the aggregator.
    new_state = collections.OrderedDict(state)
    new_state['codebooks'] = mean_codebooks
    new_state['round_num'] = state['round_num'] + 1
    return new_state

  initial_state = initial_server_state(
      num_items=num_items, text_embeddings=text_embeddings, embedding_dim=d, config=config,
      init_scale=init_scale, seed=seed)

  def initial_client_states(clients):
    return cw.initial_user_embeddings(clients, embedding_dim=d, init_scale=init_scale, seed=seed)

  def item_embeddings(state):
    """Eq. 9 on the server: every item from the mean codebooks and the public code ids."""
    return cb.reconstruct_items(state['codebooks'], state['semantic_ids'], state['collaborative_ids'],
                                state['collaborative_rate']).numpy()

  def scores(state, client_states, clients, num_users):
    users = cw.stack_users(client_states, clients, num_users, d)
    return devices.score_matrix(users, item_embeddings(state))

  return process.build_recommender_process(
      name='rqfedrec', initial_state=initial_state, server_state_type=state_type,
      client_state_type=user_type, server_payload=server_payload, client_fn=client_fn,
      server_update=server_update, initial_client_states=initial_client_states, scores=scores,
      after_round=CollaborativeRefresh(config=config, seed=seed), item_embeddings=item_embeddings)


def server_types(*, num_items: int, embedding_dim: int, config: RQConfig):
  """TFF types (server state, broadcast payload): codebooks float32[2, L, M, d], both channels' ids
  int32[I, L] and lambda; the state adds the round number."""
  ids_type = tff.TensorType(np.int32, [num_items, config.levels])
  payload = collections.OrderedDict(
      codebooks=tff.TensorType(np.float32, [2, config.levels, config.codes_per_level, embedding_dim]),
      semantic_ids=ids_type, collaborative_ids=ids_type,
      collaborative_rate=tff.TensorType(np.float32))
  state = collections.OrderedDict(payload, round_num=tff.TensorType(np.int32))
  return tff.types.to_type(state), tff.types.to_type(payload)


def initial_server_state(*, num_items: int, text_embeddings, embedding_dim: int, config: RQConfig,
                         init_scale: float, seed: int) -> collections.OrderedDict:
  """Alg. 1 lines 1-2: semantic ids and codebook from the text embeddings (collaborative ids all 0
  and lambda 0 until the first refresh); with `channels='collaborative'` (w/o SC) collaborative ids
  from the random initial item table instead, and lambda 1."""
  levels, codes, d = config.levels, config.codes_per_level, embedding_dim
  codebooks = np.zeros((2, levels, codes, d), np.float32)
  collaborative_ids = np.zeros((num_items, levels), np.int32)
  if config.channels == 'collaborative':
    semantic_ids = np.zeros((num_items, levels), np.int32)
    table = cw.initial_item_embeddings(num_items, embedding_dim=d, init_scale=init_scale, seed=seed)
    collaborative_ids, codebooks[cb.COLLABORATIVE] = _collaborative_codes(
        table, None, config=config, seed=seed, rate=1.0)
    rate = 1.0
  else:
    if text_embeddings is None:
      raise ValueError(f'channels={config.channels!r} needs text_embeddings for the semantic ids')
    semantic_ids, codebooks[cb.SEMANTIC] = semantic_codebook(
        text_embeddings, config=config, embedding_dim=d, init_scale=init_scale, seed=seed)
    rate = 0.0
  return collections.OrderedDict(
      codebooks=codebooks, semantic_ids=semantic_ids, collaborative_ids=collaborative_ids,
      collaborative_rate=np.float32(rate), round_num=np.int32(0))


@dataclasses.dataclass(frozen=True)
class CollaborativeRefresh:
  """Server program logic after round t (Alg. 1 lines 14-16, Eq. 10): every tau rounds the
  collaborative ids are rebuilt by RQ-kmeans of the current item embeddings (`_collaborative_codes`),
  and lambda_{t+1} is set for the next round.

  Everything it needs is in the server state and the round number: the first refresh is round tau,
  so the warm-up's start is known without remembering it (a resumed run computes the same lambda).
  """

  config: RQConfig
  seed: int

  def due(self, round_num: int) -> bool:
    """Whether round `round_num` ends with a refresh (with `fix_collaborative_ids` only the first)."""
    config = self.config
    if config.channels == 'semantic' or round_num % config.refresh_every:
      return False
    return not (config.fix_collaborative_ids and round_num > config.refresh_every)

  def rate(self, round_num: int) -> float:
    """lambda of round `round_num` (Eq. 10, scaled by `max_collaborative_rate`): 0 before the first
    refresh, then warming up from round 0 (`warmup_from='zero'`) or from the first refresh."""
    config = self.config
    if config.channels == 'collaborative':
      return 1.0
    if config.channels == 'semantic' or round_num <= config.refresh_every:
      return 0.0
    start = 0 if config.warmup_from == 'zero' else config.refresh_every
    return config.max_collaborative_rate * cb.collaborative_rate(
        round_num, warmup_rounds=config.warmup_rounds, start_round=start)

  def __call__(self, state, round_num: int):
    """(state for round `round_num` + 1, info for rounds.csv)."""
    state = collections.OrderedDict(state)
    info = {}
    if self.due(round_num):
      state, info = self.refresh(state, round_num)
    state['collaborative_rate'] = np.float32(self.rate(round_num + 1))
    info['collaborative_rate'] = float(state['collaborative_rate'])
    return state, info

  def refresh(self, state, round_num: int):
    """New collaborative ids and code values; `refresh_change` is the relative change of the item
    embeddings it causes, `distinct_collaborative_tuples` how many items remain distinguishable (at
    lambda = 1, items sharing all L collaborative codes have the same embedding)."""
    before = cb.reconstruct_items(state['codebooks'], state['semantic_ids'],
                                  state['collaborative_ids'], state['collaborative_rate']).numpy()
    next_rate = self.rate(round_num + 1)
    codebooks = np.array(state['codebooks'])
    semantic_part = (1.0 - next_rate) * cb.reconstruct_items(
        codebooks, state['semantic_ids'], state['collaborative_ids'], 0.0).numpy()
    state['collaborative_ids'], codebooks[cb.COLLABORATIVE] = _collaborative_codes(
        before, before - semantic_part, config=self.config, seed=self.seed + round_num, rate=next_rate)
    state['codebooks'] = codebooks
    after = cb.reconstruct_items(
        codebooks, state['semantic_ids'], state['collaborative_ids'], next_rate).numpy()
    return state, {
        'refresh_change': float(np.sum((after - before) ** 2) / max(np.sum(before ** 2), 1e-12)),
        'distinct_collaborative_tuples': int(len(np.unique(state['collaborative_ids'], axis=0))),
    }


def _collaborative_codes(items, targets, *, config: RQConfig, seed: int, rate: float):
  """Collaborative ids int32[I, L] and codebook float32[L, M, d] from item embeddings (Sec. 4.3.2).

  Ids: RQ-kmeans on the L2-normalised `items: float32[I, d]`. Values: the k-means centres
  (`refresh_values='centres'`), or the least-squares codebook whose collaborative term, scaled by
  `rate`, reproduces `targets` (the part of the item embeddings the collaborative channel must carry).
  """
  normalised = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
  codes, centres = quantise(normalised, config=config, seed=seed, channel=cb.COLLABORATIVE)
  if config.refresh_values == 'centres':
    return codes, centres
  if targets is None or rate <= 1e-6:
    targets, rate = items, 1.0
  values = cb.least_squares_codebook(
      codes, targets, codes_per_level=config.codes_per_level, scale=rate
  )
  return codes, values

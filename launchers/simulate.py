r"""Simulates a federated recommender on a protocol split and writes its results (Sec. 6).

  python -m launchers.simulate --algorithm=rqfedrec --dataset=ml-100k --protocol=paper \
      --partition=blocks --clients=100 --rounds=300 --seed=0 --output_dir=results/rqfedrec-s0

Algorithms: `rqfedrec` (Alg. 1), `fedmf` (ID-indexed FedAvg of the item table), the baselines
`fedncf` (federated NeuMF), `pfedrec` (private score functions, unweighted item-table mean) and
`fedrap` (private additive item table D, global C), `gpfedrec` (private MLPs, per-client
graph-aggregated targets), `fedcia` (private tables, mean item-item similarity, alignment),
`fedalphafuse` (Table 5: frozen standardised text embeddings plus a shared null-space ID table),
`fedrlm_con` and `fedrlm_gen` (Table 5: FedMF plus RLMRec's contrastive or generative alignment of
the embeddings with the items' text embeddings),
`mf_local` (no aggregation) and `mostpop` (train popularity, no training: the reference row every
method must beat).
`--dataset=file` reads `--interactions_file` (and optionally `--item_file`) with the generic loader.
DIR receives summary.json, rounds.csv, flags.json and, with --save_topk, topk.csv; with --tensorboard,
each round's metrics also go to DIR/tensorboard (`tensorboard --logdir DIR/tensorboard`).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
import numpy as np

from tff_rqfed import environment
from tff_rqfed import execution
from tff_rqfed import hyperparameters
from tff_rqfed import results_io
from tff_rqfed import simulation
from tff_rqfed.algorithms import fedalphafuse, fedcia, fedmf, fedncf, fedrap, fedrlm, gpfedrec, mf_local
from tff_rqfed.algorithms import pfedrec
from tff_rqfed.algorithms import rqfedrec
from tff_rqfed.data import cold_items, interactions, movielens, noise, partition, protocols, text
from tff_rqfed.evaluation import attack
from tff_rqfed.evaluation import popularity
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import privacy
from tff_rqfed.semantic import encoders

ALGORITHMS = ('rqfedrec', 'fedmf', 'fedncf', 'pfedrec', 'fedrap', 'gpfedrec', 'fedcia', 'fedalphafuse',
              'fedrlm_con', 'fedrlm_gen', 'mf_local', 'mostpop')
# Flag defaults come from the option classes, so the launcher and the library cannot drift apart.
_TRAINING = cw.LocalTraining()
_RQ = rqfedrec.RQConfig()
# Validated per-algorithm learning rates and initialisation scales (tff_rqfed/hyperparameters.py).
DEFAULT_LEARNING_RATE = hyperparameters.DEFAULT_LEARNING_RATE
DEFAULT_INIT_SCALE = hyperparameters.DEFAULT_INIT_SCALE
DEFAULT_WEIGHT_DECAY = hyperparameters.DEFAULT_WEIGHT_DECAY

_ALGORITHM = flags.DEFINE_enum('algorithm', 'rqfedrec', ALGORITHMS, 'Which method to run.')
_DATASET = flags.DEFINE_enum('dataset', 'ml-100k', ['ml-100k', 'ml-1m', 'file'], 'Dataset.')
_INTERACTIONS_FILE = flags.DEFINE_string('interactions_file', None, 'With --dataset=file: interactions.')
_ITEM_FILE = flags.DEFINE_string('item_file', None, 'With --dataset=file: optional item file (text).')
_RATING_THRESHOLD = flags.DEFINE_float('rating_threshold', None, 'Keep ratings >= this (default all).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data cache (default $TFF_RQFED_DATA_DIR or ./data).')
_PROTOCOL = flags.DEFINE_enum('protocol', 'paper', list(protocols.PROTOCOLS), 'Train/valid/test split.')
_NOISE_RATIO = flags.DEFINE_float('noise_ratio', 0.0,
                                   'Table 7: misclicks injected into each split part, as a ratio of its size.',
                                   lower_bound=0.0, upper_bound=1.0)
_COLD_ITEM_RATIO = flags.DEFINE_float(
    'cold_item_ratio', 0.0, 'Cold-start items: this share of the items is held out of all training '
    'data, its interactions tested (data/cold_items.py).', lower_bound=0.0, upper_bound=0.99)
_TRACK_SIMILARITY = flags.DEFINE_bool(
    'track_similarity', False, "Fig. 4: each round's change of item-item cosine similarity on the "
    "server's item table, over 20 random item groups (DIR/similarity_change.csv; the methods with a "
    "server-side item table: fedmf, rqfedrec, fedalphafuse, fedrlm_con, fedrlm_gen).")
_CLIENT_FRACTION = flags.DEFINE_float(
    'client_fraction', 1.0, 'Share of the clients sampled to take part in each round (the others keep '
    'their state); 1: every client, every round. The stopping flags stay in rounds: the experiment '
    "runner's sparse rows pass --patience, --min_rounds, --rounds and --eval_every times 1/f.",
    lower_bound=0.001, upper_bound=1.0)
_CLIENT_SHARDS = flags.DEFINE_integer(
    'client_shards', None, "Run each round's clients in this many shards, each summed apart and "
    'combined into the same mean (bounds the worker memory; default one per worker).', lower_bound=1)
_WORKERS = flags.DEFINE_string(
    'workers', None, 'TFF workers that run the client shards: N (start N on this machine) or '
    'host:port,... (started with python -m launchers.worker); default one local worker. The results '
    'depend on --client_shards, not on the workers.')
_WORKER_TIMEOUT = flags.DEFINE_float(
    'worker_timeout', 30.0, 'Seconds a --workers worker may take to answer at the start or after a '
    'failed call before the run stops with an error.', lower_bound=0.1)
_PARTITION = flags.DEFINE_enum('partition', 'blocks', list(partition.SCHEMES), 'Client partition.')
_CLIENTS = flags.DEFINE_integer('clients', 100, 'Number of clients (blocks partition).', lower_bound=1)
_ROUNDS = flags.DEFINE_integer('rounds', hyperparameters.MAX_ROUNDS, 'Maximum communication rounds.',
                                lower_bound=1)
_PATIENCE = flags.DEFINE_integer('patience', hyperparameters.PATIENCE,
                                 'Early-stopping patience in rounds (valid NDCG@10).', lower_bound=1)
_MIN_ROUNDS = flags.DEFINE_integer(
    'min_rounds', None, 'Patience counts only after this round (default: T_warm + tau for rqfedrec, '
    'else the validated floor of tff_rqfed/hyperparameters.py, DEFAULT_MIN_ROUNDS).', lower_bound=0)
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 1, 'Validate every N rounds.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the split, initialisation, sampling and k-means.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where results are written.', required=True)
_SAVE_TOPK = flags.DEFINE_bool('save_topk', False, "Write each test user's top-K (original ids).")
_TOP_K = flags.DEFINE_integer('top_k', 10, 'K of the metrics.', lower_bound=1)
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace the results of a different run in --output_dir (else refused).')
_RESUME = flags.DEFINE_bool('resume', False,
                            'Continue the run in --output_dir from its last saved round (same flags).')
_TENSORBOARD = flags.DEFINE_bool('tensorboard', False,
                                 "Also write each round's metrics as TensorBoard events (DIR/tensorboard).")
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', 5,
                                         'Save the program state every N rounds for --resume (0: never).',
                                         lower_bound=0)
# Model and local training (Sec. 6.1.4).
_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.', lower_bound=1)
_INIT_SCALE = flags.DEFINE_float('init_scale', None,
                                  'Std of the N(0, s^2) embedding initialisation (default: per algorithm, '
                                  'DEFAULT_INIT_SCALE).', lower_bound=0)
_LR = flags.DEFINE_float('learning_rate', None,
                         'Adam learning rate of local training (default: per algorithm, see below).',
                         lower_bound=0)
_WD = flags.DEFINE_float('weight_decay', None,
                         'Adam weight decay (L2) of local training (default: per algorithm, see below).',
                         lower_bound=0)
_EPOCHS = flags.DEFINE_integer('local_epochs', _TRAINING.epochs, 'Local epochs per round.', lower_bound=1)
_BATCH = flags.DEFINE_integer('batch_size', _TRAINING.batch_size, 'Local batch size.', lower_bound=1)
_NEGATIVES = flags.DEFINE_integer('num_negatives', _TRAINING.num_negatives, 'Sampled negatives per positive.',
                                  lower_bound=1)
# RQFedRec (Sec. 4).
_LEVELS = flags.DEFINE_integer('levels', _RQ.levels, 'L, residual levels.', lower_bound=1)
_CODES = flags.DEFINE_integer('codes_per_level', None, 'M (default 256 on ML-100k, 512 otherwise).',
                              lower_bound=1)
_TAU = flags.DEFINE_integer('refresh_every', _RQ.refresh_every, 'tau: rounds between collaborative-id refreshes.',
                            lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup_rounds', _RQ.warmup_rounds, 'T_warm of Eq. 10.', lower_bound=0)
_MAX_RATE = flags.DEFINE_float('max_collaborative_rate', _RQ.max_collaborative_rate,
                                'Ceiling of lambda (Eq. 10 scaled by it; 1 is the paper).')
_WARMUP_FROM = flags.DEFINE_enum('warmup_from', _RQ.warmup_from, list(rqfedrec.WARMUP_FROM),
                                 'lambda warm-up counted from round 0 (Eq. 10) or from the first refresh.')
_LAPLACE = flags.DEFINE_float('laplace_scale', _RQ.laplace_scale, 'delta of Eq. 11 (0: no noise).',
                              lower_bound=0)
_ATTACK = flags.DEFINE_bool('attack', False,
                            "After training, the server's attack on each client's next upload: AUC of its "
                            'training items by item change (fedmf, rqfedrec, fedcia; evaluation/attack.py).')
_LAPLACE_CLIP = flags.DEFINE_float(
    'laplace_clip', _RQ.laplace_clip,
    'L1 bound of each item row before the Laplace noise (0: none, and no finite epsilon).', lower_bound=0)
_CODEBOOK_ITEMS = flags.DEFINE_enum('codebook_items', _RQ.codebook_items, list(rqfedrec.CODEBOOK_ITEMS),
                                    'Items the codebook fit (Eq. 7) covers.')
_CODEBOOK_FIT = flags.DEFINE_enum('codebook_fit', _RQ.codebook_fit, list(rqfedrec.CODEBOOK_FITS),
                                  'How clients minimise Eq. 7.')
_CODEBOOK_SWEEPS = flags.DEFINE_integer('codebook_sweeps', _RQ.codebook_sweeps, 'Blockwise fit: passes over the 2L blocks.')
_CODEBOOK_RIDGE = flags.DEFINE_float('codebook_ridge', _RQ.codebook_ridge, 'Blockwise fit: ridge towards the global codes.')
_CODEBOOK_STEPS = flags.DEFINE_integer('codebook_steps', _RQ.codebook_steps, 'Adam fit: steps.')
_CODEBOOK_LR = flags.DEFINE_float('codebook_learning_rate', _RQ.codebook_learning_rate, 'Adam fit: learning rate.')
_REFRESH_VALUES = flags.DEFINE_enum('refresh_values', _RQ.refresh_values, list(rqfedrec.REFRESH_VALUES),
                                    'Collaborative code values after a refresh.')
_CHANNELS = flags.DEFINE_enum('channels', _RQ.channels, list(rqfedrec.CHANNELS),
                              "'semantic' = w/o CC, 'collaborative' = w/o SC (Fig. 3).")
_FIX_CC = flags.DEFINE_bool('fix_collaborative_ids', False, 'Fix CC ablation: ids built once.')
_NO_IE = flags.DEFINE_bool('without_item_embedding', False, 'w/o IE ablation: train codebooks directly.')
_SEMANTIC_INIT = flags.DEFINE_enum('semantic_init', _RQ.semantic_init, list(rqfedrec.SEMANTIC_INITS),
                                   'Initial semantic code values.')
_KMEANS_DIM = flags.DEFINE_integer('kmeans_dim', _RQ.kmeans_dim,
                                   'RQ-kmeans on the top-k principal components (0: all d dimensions).',
                                   lower_bound=0)
_UNIQUE_CODES = flags.DEFINE_bool('unique_codes', _RQ.unique_codes,
                                   'No two items share a whole L-code tuple (per channel).')
# FedNCF (NeuMF tower).
_NCF_HIDDEN = flags.DEFINE_list('ncf_hidden_units', [str(u) for u in fedncf.DEFAULT_HIDDEN_UNITS],
                                'FedNCF: widths of the MLP tower layers.')
_CODE_IDS = flags.DEFINE_enum('code_ids', _RQ.code_ids, list(rqfedrec.CODE_IDS),
                              "How items get code ids: RQ-kmeans, or 'hash' of the item id (Table 6).")
# PFedRec.
_PFEDREC_ITEM_LR_SCALE = flags.DEFINE_float(
    'pfedrec_item_lr_scale', 1.0,
    'PFedRec: item-table Adam learning rate = learning_rate x this (the official SGD uses num_items x 80).')
# FedRAP (additive personalisation).
_FEDRAP_LAMBDA = flags.DEFINE_float('fedrap_lambda', fedrap.DEFAULT_LAMBDA, 'FedRAP: lambda, weight of -MSE(D, C).')
_FEDRAP_MU = flags.DEFINE_float('fedrap_mu', fedrap.DEFAULT_MU, 'FedRAP: mu, weight of L1(C).')
_FEDRAP_PERSONAL_LR_SCALE = flags.DEFINE_float(
    'fedrap_personal_lr_scale', 1.0,
    'FedRAP: learning rate of the private table D over --learning_rate (1: as FedRAP\'s code; 0: D '
    'frozen at its initialisation, an ablation).', lower_bound=0.0)
_FEDRAP_SCHEDULE = flags.DEFINE_enum(
    'fedrap_schedule', fedrap.DEFAULT_SCHEDULE, list(fedrap.SCHEDULES),
    "FedRAP: 'tanh' (the paper's increasing lambda, mu) or 'fixed' (the released code).")
# GPFedRec (client relation graph).
_GPFEDREC_HIDDEN = flags.DEFINE_list('gpfedrec_hidden_units', [str(u) for u in gpfedrec.DEFAULT_HIDDEN_UNITS],
                                     "GPFedRec: widths of each user's MLP hidden layers.")
_GPFEDREC_REG = flags.DEFINE_float('gpfedrec_reg', gpfedrec.DEFAULT_REG,
                                   'GPFedRec: weight of the MSE regulariser toward R_k.')
_GPFEDREC_THRESHOLD = flags.DEFINE_float(
    'gpfedrec_threshold', gpfedrec.DEFAULT_THRESHOLD,
    'GPFedRec: neighbours are clients above threshold x the mean similarity.')
_GPFEDREC_LAYERS = flags.DEFINE_integer('gpfedrec_layers', gpfedrec.DEFAULT_LAYERS,
                                        'GPFedRec: message-passing steps over the client graph.')
_GPFEDREC_SIMILARITY = flags.DEFINE_enum(
    'gpfedrec_similarity', 'cosine', list(gpfedrec.SIMILARITIES),
    "GPFedRec: 'cosine' (the paper) or 'released_distance' (the released code's cosine distance).")
# FedCIA (similarity aggregation).
_ALPHAFUSE_NULL_DIM = flags.DEFINE_integer(
    'alphafuse_null_dim', fedalphafuse.DEFAULT_NULL_DIM,
    "FedAlphaFuse: n, the ID embedding's axes (the language part's lowest-variance ones).", lower_bound=1)
_ALPHAFUSE_ID_INIT = flags.DEFINE_enum('alphafuse_id_init', 'zeros', list(fedalphafuse.ID_INITS),
                                       'FedAlphaFuse: initial ID embeddings (zeros, or N(0, 1)).')
_ALPHAFUSE_STANDARDIZE = flags.DEFINE_bool(
    'alphafuse_standardize', False, 'FedAlphaFuse: standardise the language part (unit variance per '
    "axis; the official default, worse on validation here: algorithms/fedalphafuse.py).")
# FedRLM (RLMRec's alignment): unset means the variant's official value (algorithms/fedrlm.py).
_RLM_WEIGHT = flags.DEFINE_float('rlm_weight', None, 'FedRLM: weight of the alignment term (official: '
                                 'kd_weight 0.01 for con, recon_weight 0.1 for gen).')
_RLM_TEMPERATURE = flags.DEFINE_float('rlm_temperature', None,
                                      'FedRLM: InfoNCE temperature (official: 0.2 for both).')
_RLM_MASK_RATIO = flags.DEFINE_float('rlm_mask_ratio', None, 'FedRLM_gen: share of the nodes whose '
                                     'profiles are reconstructed each step (official: 0.1).')
_FEDCIA_ALIGN_STEPS = flags.DEFINE_integer(
    'fedcia_align_steps', fedcia.DEFAULT_ALIGN_STEPS,
    'FedCIA: SGD steps aligning a client item table to the mean similarity (released code: 100).')
_FEDCIA_ALIGN_LR = flags.DEFINE_float('fedcia_align_lr', fedcia.DEFAULT_ALIGN_LEARNING_RATE,
                                      'FedCIA: learning rate of the alignment steps (released agg_lr).')
_FEDCIA_NOISE = flags.DEFINE_float('fedcia_noise', fedcia.DEFAULT_NOISE_SCALE,
                                   'FedCIA: Laplace scale of the noise on the uploaded similarity.')
_ENCODER = flags.DEFINE_enum('encoder', 'use', list(encoders.ENCODERS), 'Text encoder (Sec. 4.3.1).')


def load_dataset():
  data_dir = _DATA_DIR.value
  if _DATASET.value == 'file':
    if not _INTERACTIONS_FILE.value:
      raise app.UsageError('--dataset=file needs --interactions_file')
    return interactions.load_interactions(
        _INTERACTIONS_FILE.value, name=pathlib.Path(_INTERACTIONS_FILE.value).stem,
        item_path=_ITEM_FILE.value, rating_threshold=_RATING_THRESHOLD.value,
    )
  dataset = movielens.load_movielens(_DATASET.value, cache_dir=data_dir)
  if _RATING_THRESHOLD.value is not None:
    raise app.UsageError('--rating_threshold applies to --dataset=file only')
  return dataset


def _flag_or_default(flag, defaults: dict[str, float], fallback: float) -> float:
  """The flag's value, or the algorithm's validated default when the flag is not given."""
  if flag.value is not None:
    return flag.value
  return defaults.get(_ALGORITHM.value, fallback)


def learning_rate() -> float:
  return _flag_or_default(_LR, DEFAULT_LEARNING_RATE, _TRAINING.learning_rate)


def weight_decay() -> float:
  return _flag_or_default(_WD, DEFAULT_WEIGHT_DECAY, _TRAINING.weight_decay)


def init_scale() -> float:
  return _flag_or_default(_INIT_SCALE, DEFAULT_INIT_SCALE, 0.1)


def min_rounds() -> int:
  """The early-stop floor: --min_rounds, else T_warm + tau for RQFedRec (its validation dips while
  Eq. 10 warms up), else the algorithm's validated floor (`hyperparameters.DEFAULT_MIN_ROUNDS`)."""
  if _MIN_ROUNDS.value is not None:
    return _MIN_ROUNDS.value
  return hyperparameters.early_stop_floor(_ALGORITHM.value, warmup_rounds=_WARMUP.value,
                                          refresh_every=_TAU.value)


def _hidden_units(flag) -> tuple[int, ...]:
  try:
    return tuple(int(units) for units in flag.value)
  except ValueError:
    raise app.UsageError(f'--{flag.name} must be integers, got {flag.value!r}') from None


def codes_per_level(dataset) -> int:
  """M: the flag, or the paper's value (256 on ML-100k, 512 on the other datasets)."""
  return _CODES.value or (256 if dataset.name == 'ml-100k' else 512)


def uses_text_embeddings() -> bool:
  """Whether --algorithm (with --channels) reads the items' text embeddings."""
  if _ALGORITHM.value == 'rqfedrec':
    return _CHANNELS.value != 'collaborative'
  return _ALGORITHM.value == 'fedalphafuse' or _ALGORITHM.value in fedrlm.ALGORITHM_VARIANTS


def build_process(dataset, seed: int, num_clients: int, *, text_embeddings=None):
  """The --algorithm's `RecommenderProcess`; `text_embeddings: float32[I, d_l]` where
  `uses_text_embeddings()`, else None."""
  training = cw.LocalTraining(
      epochs=_EPOCHS.value, batch_size=_BATCH.value, num_negatives=_NEGATIVES.value,
      learning_rate=learning_rate(), weight_decay=weight_decay(),
  )
  common = dict(num_items=dataset.num_items, embedding_dim=_DIM.value, training=training,
                init_scale=init_scale(), seed=seed)
  if _ALGORITHM.value == 'fedmf':
    return fedmf.build_fedmf(laplace_scale=_LAPLACE.value, laplace_clip=_LAPLACE_CLIP.value, **common)
  if _ALGORITHM.value == 'mf_local':
    return mf_local.build_mf_local(**common)
  if _ALGORITHM.value == 'fedncf':
    return fedncf.build_fedncf(hidden_units=_hidden_units(_NCF_HIDDEN), **common)
  if _ALGORITHM.value == 'fedrap':
    return fedrap.build_fedrap(lam=_FEDRAP_LAMBDA.value, mu=_FEDRAP_MU.value,
                               schedule=_FEDRAP_SCHEDULE.value,
                               personal_lr_scale=_FEDRAP_PERSONAL_LR_SCALE.value, **common)
  if _ALGORITHM.value == 'gpfedrec':
    return gpfedrec.build_gpfedrec(
        num_clients=num_clients, hidden_units=_hidden_units(_GPFEDREC_HIDDEN),
        reg=_GPFEDREC_REG.value, threshold=_GPFEDREC_THRESHOLD.value, layers=_GPFEDREC_LAYERS.value,
        similarity=_GPFEDREC_SIMILARITY.value, **common)
  if _ALGORITHM.value == 'fedcia':
    return fedcia.build_fedcia(align_steps=_FEDCIA_ALIGN_STEPS.value,
                               align_learning_rate=_FEDCIA_ALIGN_LR.value,
                               noise_scale=_FEDCIA_NOISE.value, **common)
  if _ALGORITHM.value == 'pfedrec':
    return pfedrec.build_pfedrec(item_learning_rate_scale=_PFEDREC_ITEM_LR_SCALE.value, **common)
  if _ALGORITHM.value == 'fedalphafuse':
    return fedalphafuse.build_fedalphafuse(
        language_embeddings=text_embeddings, null_dim=_ALPHAFUSE_NULL_DIM.value,
        id_init=_ALPHAFUSE_ID_INIT.value, standardize=_ALPHAFUSE_STANDARDIZE.value, **common)
  if _ALGORITHM.value in fedrlm.ALGORITHM_VARIANTS:
    return fedrlm.build_fedrlm(variant=fedrlm.ALGORITHM_VARIANTS[_ALGORITHM.value],
                               profile_embeddings=text_embeddings, **rlm_options(), **common)
  codes = codes_per_level(dataset)
  config = rqfedrec.RQConfig(
      levels=_LEVELS.value, codes_per_level=codes, refresh_every=_TAU.value,
      warmup_rounds=_WARMUP.value, max_collaborative_rate=_MAX_RATE.value,
      laplace_scale=_LAPLACE.value, laplace_clip=_LAPLACE_CLIP.value,
      codebook_items=_CODEBOOK_ITEMS.value, codebook_fit=_CODEBOOK_FIT.value,
      codebook_sweeps=_CODEBOOK_SWEEPS.value, codebook_ridge=_CODEBOOK_RIDGE.value,
      codebook_steps=_CODEBOOK_STEPS.value,
      codebook_learning_rate=_CODEBOOK_LR.value, refresh_values=_REFRESH_VALUES.value,
      warmup_from=_WARMUP_FROM.value, channels=_CHANNELS.value,
      fix_collaborative_ids=_FIX_CC.value, item_embedding=not _NO_IE.value,
      semantic_init=_SEMANTIC_INIT.value, kmeans_dim=_KMEANS_DIM.value,
      unique_codes=_UNIQUE_CODES.value, code_ids=_CODE_IDS.value,
  )
  return rqfedrec.build_rqfedrec(text_embeddings=text_embeddings, config=config, **common)


def rlm_options() -> dict[str, float]:
  """The FedRLM flags that are set (weight, temperature, mask_ratio); the others keep the variant's
  official value."""
  flags_by_option = {'weight': _RLM_WEIGHT, 'temperature': _RLM_TEMPERATURE, 'mask_ratio': _RLM_MASK_RATIO}
  return {option: flag.value for option, flag in flags_by_option.items() if flag.value is not None}


def item_text_embeddings(dataset):
  """float32[I, d_l] embeddings of the items' texts (--encoder; cached under the data folder)."""
  embeddings = encoders.item_text_embeddings(
      text.item_texts(dataset), dataset_name=dataset.name, encoder=_ENCODER.value,
      cache_dir=_DATA_DIR.value or movielens.default_cache_dir())
  return embeddings


def run_mostpop(dataset, split, output_dir, environment_record: dict):
  scores = popularity.most_popular_scores(
      np.concatenate([split.train, split.valid]), num_users=split.num_users, num_items=split.num_items)
  test, top_k = simulation.evaluate_scores(scores, split, k=_TOP_K.value, on='test')
  summary = {'algorithm': 'mostpop', 'test': test['correct'], 'test_paper': test['paper'],
             'test_item_groups': simulation.test_item_group_metrics(top_k, split, k=_TOP_K.value),
             'best_round': 0, 'rounds_run': 0, 'seconds_per_round': None,
             'communication': {'upload': 0, 'download': 0}, 'environment': environment_record}
  results_io.write_atomic(output_dir / 'summary.json', json.dumps(summary, indent=2) + '\n')
  return summary


def fail(message) -> None:
  """Bad input: one line on stderr, exit status 2, nothing written in the output folder."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad or missing flag reported as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(e)


def _flag_values() -> dict:
  """The run's flags as `flags.json` records them: every launcher flag, defaults as the values used."""
  module = sys.argv[0] if __name__ == '__main__' else __name__
  values = {flag.name: flag.value for flag in flags.FLAGS.get_key_flags_for_module(module)}
  values['learning_rate'] = learning_rate()  # the effective values, also when defaulted
  values['weight_decay'] = weight_decay()
  values['init_scale'] = init_scale()
  values['min_rounds'] = min_rounds()
  values['client_shards'] = client_shards()
  return values


def worker_spec() -> int | list[str] | None:
  """--workers as a count of local workers, a list of host:port addresses, or None (one local)."""
  value = (_WORKERS.value or '').strip()
  if not value:
    return None
  if value.isdigit():
    if int(value) < 1:
      raise app.UsageError(f'--workers must be a count >= 1 or host:port,...; got {value!r}')
    return int(value)
  addresses = [a.strip() for a in value.split(',') if a.strip()]
  for address in addresses:
    try:
      execution.parse_address(address)
    except ValueError as e:
      raise app.UsageError(f'--workers: {e}') from None
  return addresses


def client_shards() -> int:
  """The effective --client_shards: the flag, else one shard per worker."""
  spec = worker_spec()
  count = 1 if spec is None else spec if isinstance(spec, int) else len(spec)
  shards = _CLIENT_SHARDS.value or count
  if shards < count:
    raise app.UsageError(f'--client_shards={shards} is fewer than the {count} workers of '
                         f'--workers={_WORKERS.value}: every worker needs a shard')
  return shards


def start_workers():
  """The `execution.Workers` of --workers, or None for this process's one local worker."""
  spec = worker_spec()
  if spec is None:
    return None
  if isinstance(spec, int):
    return execution.local_workers(spec, timeout_s=_WORKER_TIMEOUT.value)
  try:
    return execution.remote_workers(spec, timeout_s=_WORKER_TIMEOUT.value)
  except execution.WorkerError as e:
    fail(f'--workers: {e}')


# Flags that do not change a run's results: a folder's run is the same run whatever their values.
_RUN_INDEPENDENT_FLAGS = ('output_dir', 'progress', 'overwrite', 'resume', 'checkpoint_every',
                          'tensorboard', 'workers', 'worker_timeout')


def check_output_dir(output_dir: pathlib.Path, flag_values: dict) -> None:
  """Refuses a folder that holds another run's results (different flags) unless --overwrite."""
  recorded_path = output_dir / 'flags.json'
  if _OVERWRITE.value or not recorded_path.exists():
    return
  try:
    recorded = json.loads(recorded_path.read_text())
  except ValueError:
    raise app.UsageError(f'{recorded_path} is not valid JSON; pass --overwrite to replace the run in '
                         f'{output_dir}') from None
  for name, value in sorted(flag_values.items()):
    if name not in _RUN_INDEPENDENT_FLAGS and recorded.get(name, value) != value:
      raise app.UsageError(
          f'--output_dir={output_dir} holds a run with --{name}={recorded.get(name)!r} (this run: '
          f'{value!r}); choose another folder or pass --overwrite')


def check_sizes(dataset, split) -> None:
  """Flags whose valid range depends on the data: clients <= users, M <= items."""
  if _ALGORITHM.value != 'mostpop' and _PARTITION.value == 'blocks' and _CLIENTS.value > split.num_users:
    raise app.UsageError(f'--clients={_CLIENTS.value} exceeds the {split.num_users} users of '
                         f'{dataset.name}')
  if _ALGORITHM.value != 'mostpop':
    num_clients = _CLIENTS.value if _PARTITION.value == 'blocks' else split.num_users
    per_round = simulation.participants_per_round(num_clients, _CLIENT_FRACTION.value)
    if client_shards() > per_round:
      raise app.UsageError(f'--client_shards={client_shards()} exceeds the {per_round} clients of a round')
  if _ALGORITHM.value == 'rqfedrec' and codes_per_level(dataset) > dataset.num_items:
    default = '' if _CODES.value else ' (the default)'
    raise app.UsageError(f'--codes_per_level={codes_per_level(dataset)}{default} exceeds the '
                         f'{dataset.num_items} items of {dataset.name}')


def note_users_without_interactions(split) -> None:
  """Says on stderr what happens to users the split leaves without training or test interactions."""
  no_train = split.num_users - len(np.unique(split.train[:, 0]))
  no_test = split.num_users - len(np.unique(split.test[:, 0]))
  if no_train:
    print(f'note: {no_train} of {split.num_users} users have no training interaction; they are ranked '
          'from their initial embedding', file=sys.stderr)
  if no_test:
    print(f'note: {no_test} of {split.num_users} users have no test interaction; the metrics average '
          'over the others', file=sys.stderr)


LAPLACE_ALGORITHMS = ('fedmf', 'rqfedrec')  # FedCIA has its own noise: --fedcia_noise


def check_algorithm_flags() -> None:
  """Flags that only some algorithms read."""
  if _ATTACK.value and _ALGORITHM.value not in attack.ATTACKED:
    raise app.UsageError(f'--attack applies to {", ".join(attack.ATTACKED)}, not --algorithm={_ALGORITHM.value}')
  if (_LAPLACE.value > 0 or _LAPLACE_CLIP.value > 0) and _ALGORITHM.value not in LAPLACE_ALGORITHMS:
    raise app.UsageError(f'--laplace_scale and --laplace_clip apply to {", ".join(LAPLACE_ALGORITHMS)}, '
                         f'not --algorithm={_ALGORITHM.value}')
  if _COLD_ITEM_RATIO.value > 0 and _ATTACK.value:
    raise app.UsageError('--attack replays uploads without cold items; it cannot be combined with '
                         f'--cold_item_ratio={_COLD_ITEM_RATIO.value}')


def check_process_flags(process) -> None:
  """Flags that need something of the built process (before any TFF worker starts): a server-side
  item table for --track_similarity, a round that can run on a sample of the clients."""
  name = _ALGORITHM.value
  if _TRACK_SIMILARITY.value and process.item_embeddings is None:
    raise app.UsageError(f'--track_similarity needs an item table the server can form; --algorithm={name} '
                         'keeps its item tables on the clients')
  collects = process.collect is not None  # the round gathers every client's upload (GPFedRec's graph)
  if _CLIENT_FRACTION.value < 1 and collects:
    raise app.UsageError(f'--client_fraction: --algorithm={name} builds its round from every client\'s '
                         f'upload (its client graph); it runs with all clients, not {_CLIENT_FRACTION.value}')


def privacy_summary(summary: dict) -> dict:
  """The privacy loss of a client's uploads over the run (Eq. 11 with clipping; privacy.py)."""
  if _ALGORITHM.value not in LAPLACE_ALGORITHMS or _LAPLACE.value <= 0:
    return {}
  return {'privacy': privacy.laplace_epsilon(scale=_LAPLACE.value, clip=_LAPLACE_CLIP.value,
                                             rounds=summary['rounds_run'])}


def finish_summary(process, clients, num_items: int):
  """The launcher's additions to the summary: the privacy loss and, with --attack, the attack's AUC."""

  def on_finish(summary, best_state, best_client_states) -> dict:
    extra = privacy_summary(summary)
    if _ATTACK.value:
      extra.update(attack.attack_auc(process, best_state, best_client_states, clients,
                                     num_items=num_items, seed=_SEED.value,
                                     round_num=summary['best_round'] + 1))
    return extra

  return on_finish


def _prepare(output_dir: pathlib.Path):
  """Everything a run needs, checked before anything is written or any TFF worker started; `inputs`
  are the derived inputs it loaded (name -> array), whose digests the summary records (environment.py)."""
  flag_values = _flag_values()
  check_algorithm_flags()
  check_output_dir(output_dir, flag_values)
  dataset, split, clients, process, inputs = build_run()
  note_users_without_interactions(split)
  return flag_values, dataset, split, clients, process, inputs


def build_run():
  """(dataset, split, clients, process, inputs) the flags describe, checked; clients and process
  are None for mostpop. Also what `launchers.fedrap_parts` rebuilds a finished run from."""
  dataset = load_dataset()
  split = protocols.make_split(dataset, protocol=_PROTOCOL.value, seed=_SEED.value)
  split = noise.inject_noise(split, ratio=_NOISE_RATIO.value, seed=_SEED.value)
  split = cold_items.hold_out_items(split, ratio=_COLD_ITEM_RATIO.value, seed=_SEED.value)
  check_sizes(dataset, split)
  clients = process = None
  inputs = {}
  if _ALGORITHM.value != 'mostpop':
    if uses_text_embeddings():
      inputs['text_embeddings'] = item_text_embeddings(dataset)
    clients = partition.build_clients(split, scheme=_PARTITION.value, num_clients=_CLIENTS.value)
    process = build_process(dataset, _SEED.value, num_clients=len(clients),
                            text_embeddings=inputs.get('text_embeddings'))
    check_process_flags(process)
  return dataset, split, clients, process, inputs


def main(argv):
  del argv
  output_dir = pathlib.Path(_OUTPUT_DIR.value)
  try:
    flag_values, dataset, split, clients, process, inputs = _prepare(output_dir)
  except (app.UsageError, interactions.DataError) as e:
    fail(e)
  results_io.write_atomic(output_dir / 'flags.json', json.dumps(flag_values, indent=2, sort_keys=True))
  seed = _SEED.value
  if process is None:
    summary = run_mostpop(dataset, split, output_dir, environment.describe())
  else:
    execution.set_execution_context()
    workers = start_workers()
    config = simulation.SimulationConfig(
        rounds=_ROUNDS.value, patience=_PATIENCE.value, min_rounds=min_rounds(),
        eval_every=_EVAL_EVERY.value, seed=seed, k=_TOP_K.value, save_topk=_SAVE_TOPK.value,
        progress=_PROGRESS.value, checkpoint_every=_CHECKPOINT_EVERY.value, resume=_RESUME.value,
        tensorboard=_TENSORBOARD.value, client_fraction=_CLIENT_FRACTION.value,
        track_similarity=_TRACK_SIMILARITY.value, client_shards=client_shards(),
        keep_best_states=_ATTACK.value,  # the attack replays the best round's uploads
    )
    try:
      summary = simulation.run_simulation(
          process, split=split, clients=clients, config=config, output_dir=output_dir,
          item_ids=dataset.item_ids, user_ids=dataset.user_ids,
          extra_summary={'dataset': dataset.name, 'protocol': _PROTOCOL.value,
                         'partition': _PARTITION.value, 'num_clients': len(clients), 'seed': seed,
                         'environment': environment.describe(inputs=inputs)},
          on_finish=finish_summary(process, clients, dataset.num_items), workers=workers,
      )
    except simulation.StateMismatchError as e:  # --resume of a state this run cannot load
      fail(e)
    except execution.WorkerError as e:  # not bad input, but one line too; saved rounds are kept
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
  print(json.dumps({key: summary[key] for key in ('algorithm', 'test', 'test_paper', 'best_round',
                                                  'rounds_run', 'seconds_per_round', 'communication')},
                   indent=2))
  if summary.get('interrupted'):
    sys.exit(130)  # stopped by Ctrl-C or SIGTERM; the results of the best round are written


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

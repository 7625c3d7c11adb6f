r"""How much of a round's item update a codebook upload can carry.

A diagnosis for the README's "Where the feature-indexed paradigm loses ground".

  .venv/bin/python -m benchmarks.codebook_span [--embedding_dim=512] [--seed=0]

A client's codebook fit (Eq. 7) replaces its item update Delta: float32[I, d] by the closest update
of the form A @ dB, where A: {0, 1}[I, rows] marks the codes each item uses, weighted as in Eq. 6.
Column by column, what survives is the projection of Delta onto the column space of A, whatever d is.
This script builds A for ML-100k from the real semantic ids (RQ-kmeans of the USE text embeddings,
as `rqfedrec.semantic_codebook` does) and collaborative ids (RQ-kmeans of a random normalised item
table, as at a refresh), with RQ-kmeans in all d dimensions and on 64 principal components
(`kmeans_dim`), and reports how many items have a tuple of their own, the rank of A and the share of
a random update's energy that survives:

* lambda = 1 (the paper after the warm-up): only the L collaborative codes, L * M rows;
* lambda in (0, 1) (`--max_collaborative_rate` < 1): both channels, 2 * L * M rows.

A random update is the worst case (a trained update has structure the codes may share); the
share is what an update without such structure keeps, the code_loss_after / code_loss_before ratio
logged in rounds.csv measures the real one. Writes results/benchmarks/codebook_span.json.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
import numpy as np

from tff_rqfed import results_io
from tff_rqfed.algorithms import rqfedrec
from tff_rqfed.data import movielens, text
from tff_rqfed.quantization import codebooks as cb
from tff_rqfed.semantic import encoders

_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of k-means and of the random update.')
_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/codebook_span.json', 'JSON output.')


def kept_share(matrix: np.ndarray, update: np.ndarray) -> float:
  """Share of ||update||^2 in the column space of `matrix` (exact least squares, no ridge)."""
  solution, *_ = np.linalg.lstsq(matrix, update, rcond=None)
  return float(np.sum((matrix @ solution) ** 2) / np.sum(update ** 2))


def main(argv):
  del argv
  dataset = movielens.load_movielens('ml-100k')
  embeddings = encoders.item_text_embeddings(
      text.item_texts(dataset), dataset_name=dataset.name, cache_dir=movielens.default_cache_dir())
  rng = np.random.default_rng(_SEED.value)
  table = rng.normal(size=(dataset.num_items, _DIM.value)).astype(np.float32)
  table /= np.linalg.norm(table, axis=1, keepdims=True)
  update = rng.normal(size=(dataset.num_items, 64))  # 64 columns: each column is projected alike
  result = {'items': int(dataset.num_items), 'embedding_dim': _DIM.value}
  for kmeans_dim in (0, 64):
    config = rqfedrec.RQConfig(kmeans_dim=kmeans_dim)
    semantic_ids, _ = rqfedrec.semantic_codebook(
        embeddings, config=config, embedding_dim=_DIM.value, init_scale=0.01, seed=_SEED.value)
    collaborative_ids, _ = rqfedrec.quantise(table, config=config, seed=_SEED.value + 1)
    collaborative = cb.assignment_matrix(collaborative_ids, codes_per_level=config.codes_per_level)
    both = np.hstack(
        [cb.assignment_matrix(semantic_ids, codes_per_level=config.codes_per_level), collaborative])
    result[f'kmeans_dim={kmeans_dim}'] = {
        'distinct_semantic_tuples': int(len(np.unique(semantic_ids, axis=0))),
        'distinct_collaborative_tuples': int(len(np.unique(collaborative_ids, axis=0))),
        'collaborative_only': {'rows': int(collaborative.shape[1]),
                               'rank': int(np.linalg.matrix_rank(collaborative)),
                               'kept_share': kept_share(collaborative, update)},
        'both_channels': {'rows': int(both.shape[1]), 'rank': int(np.linalg.matrix_rank(both)),
                          'kept_share': kept_share(both, update)},
    }
  print(json.dumps(result, indent=2))
  output = pathlib.Path(_OUTPUT.value)
  results_io.write_atomic(output, json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
  app.run(main)

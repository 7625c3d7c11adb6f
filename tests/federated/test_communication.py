"""Communication per client per round read from the TFF types (Sec. 4.7, Table 4)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_rqfed.algorithms import fedmf, rqfedrec
from tff_rqfed.federated import communication

ML100K_ITEMS, PAPER_DIM = 1682, 512


def test_fedmf_on_ml100k_sizes_uploads_and_downloads_the_whole_item_table():
  process = fedmf.build_fedmf(num_items=ML100K_ITEMS, embedding_dim=PAPER_DIM)
  comm = process.communication
  assert comm['upload'] == 861_184 == ML100K_ITEMS * PAPER_DIM
  assert comm['download'] == 861_184
  assert comm['download_scalars'] == 0


def test_rqfedrec_on_ml100k_sizes_uploads_codebooks_and_downloads_codebooks_and_ids():
  text = np.random.default_rng(0).normal(size=(ML100K_ITEMS, 16)).astype(np.float32)
  config = rqfedrec.RQConfig(levels=3, codes_per_level=256, kmeans_iterations=3)
  process = rqfedrec.build_rqfedrec(
      num_items=ML100K_ITEMS, text_embeddings=text, embedding_dim=PAPER_DIM, config=config
  )
  comm = process.communication
  assert comm['upload'] == 786_432 == 2 * 3 * 256 * 512
  assert comm['download'] == 796_524 == 786_432 + 2 * ML100K_ITEMS * 3
  assert comm['download_scalars'] == 1  # the collaborative rate
  assert comm['upload_scalars'] == 0


def test_count_values_counts_tensor_values_and_scalars_of_a_structure():
  type_spec = tff.types.to_type(collections.OrderedDict(
      a=tff.TensorType(np.float32, [3, 4]), b=tff.TensorType(np.int32, [5]),
      c=tff.TensorType(np.float32),
  ))
  assert communication.count_values(type_spec) == (17, 1)
  placed = tff.FederatedType(type_spec, tff.CLIENTS)
  assert communication.count_values(placed) == (17, 1)


def test_count_values_raises_on_an_unknown_dimension():
  with pytest.raises(ValueError, match='not fixed'):
    communication.count_values(tff.TensorType(np.float32, [None, 8]))

"""The server's upload attack on the planted problem of tests/conftest.py.

Without sampled negatives only the client's positives are trained, so an upload that gives them away
gives an AUC far from 0.5; heavy Laplace noise brings it back to about 0.5. (With negatives the rows of
sampled negatives change too, often more than the positives': the AUC is then below 0.5, a leak all
the same, which `attack_advantage` reports.)
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import fedcia, fedmf, rqfedrec
from tff_rqfed.evaluation import attack
from tff_rqfed.federated import client_work as cw

ITEMS, D = 40, 8  # the planted problem of tests/conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=1, learning_rate=0.05)


def _build(name, **options):
  common = dict(num_items=ITEMS, embedding_dim=D, training=TRAINING, init_scale=0.1, seed=0)
  if name == 'fedmf':
    return fedmf.build_fedmf(**common, **options)
  if name == 'fedcia':
    return fedcia.build_fedcia(align_steps=2, **common, **options)
  text = np.random.default_rng(0).normal(size=(ITEMS, 16)).astype(np.float32)
  config = rqfedrec.RQConfig(levels=2, codes_per_level=4, kmeans_dim=8, **options)
  return rqfedrec.build_rqfedrec(text_embeddings=text, config=config, **common)


def _auc(name, planted_problem, **options):
  _, clients = planted_problem
  process = _build(name, **options)
  return attack.attack_auc(process, process.initialize(), process.initial_client_states(clients),
                           clients, num_items=ITEMS, seed=0, round_num=1)


def test_fedmf_upload_gives_the_clients_items_away_and_heavy_noise_hides_them(tff_context,
                                                                              planted_problem):
  clear = _auc('fedmf', planted_problem)
  assert clear['attack_auc'] > 0.7, clear
  assert clear['attack_advantage'] == pytest.approx(2 * abs(clear['attack_auc'] - 0.5))
  assert clear['attack_round'] == 1
  noisy = _auc('fedmf', planted_problem, laplace_scale=10.0)
  assert noisy['attack_advantage'] < 0.3 < clear['attack_advantage'], noisy


def test_fedcia_similarity_upload_leaks_the_clients_items(tff_context, planted_problem):
  assert _auc('fedcia', planted_problem)['attack_auc'] > 0.55


def test_rqfedrec_attack_runs_on_the_rebuilt_items(tff_context, planted_problem):
  result = _auc('rqfedrec', planted_problem)
  assert 0.0 <= result['attack_auc_min'] <= result['attack_auc'] <= result['attack_auc_max'] <= 1.0


def test_rqfedrec_change_reaches_exactly_the_items_that_share_a_changed_code():
  codebooks = np.zeros((2, 2, 3, 4), np.float32)
  payload = {'codebooks': tf.constant(codebooks),
             'semantic_ids': tf.constant([[0, 0], [1, 0], [2, 1], [0, 2]], tf.int32),
             'collaborative_ids': tf.constant([[0, 0], [0, 0], [0, 0], [0, 0]], tf.int32),
             'collaborative_rate': tf.constant(0.0)}
  upload = codebooks.copy()
  upload[0, 0, 0] = 1.0  # semantic level 1, code 0: items 0 and 3
  change = attack.item_change('rqfedrec', payload, upload)
  np.testing.assert_allclose(change, [2.0, 0.0, 0.0, 2.0], rtol=1e-6)  # ||(1, 1, 1, 1)|| = 2


def test_fedmf_change_is_the_row_norm_of_upload_minus_broadcast():
  payload = np.zeros((3, 2), np.float32)
  upload = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
  np.testing.assert_allclose(attack.item_change('fedmf', payload, upload), [5.0, 0.0, 1.0])


def test_fedcia_change_is_measured_against_the_broadcast_mean_similarity():
  vectors = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0].astype(np.float32)
  values = np.array([3.0, 1.0, 0.5, 0.0], np.float32)
  mean = (vectors * values) @ vectors.T
  upload = mean.copy()
  upload[2] += 1.0
  change = attack.item_change('fedcia', {'eigenvectors': vectors, 'eigenvalues': values}, upload)
  np.testing.assert_allclose(change, [0.0, 0.0, 2.0, 0.0], atol=1e-5)


def test_other_algorithms_are_refused_by_name():
  with pytest.raises(ValueError, match="not 'pfedrec'"):
    attack.item_change('pfedrec', None, None)

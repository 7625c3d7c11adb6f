"""Every trained algorithm keeps the cold items (`--cold_item_ratio`, data/cold_items.py) out of its
negatives: each client's sampler (`mf.round_examples`) gets the round's `excluded_items`."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed.algorithms import fedcia, fedmf, fedncf, fedrap, gpfedrec, mf_local, pfedrec, rqfedrec
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import mf

NUM_ITEMS, D = 40, 8  # the planted problem of conftest.py
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)
COLD = np.array([5, 27], np.int32)


def _text():
  return np.random.default_rng(0).normal(size=(NUM_ITEMS, 16)).astype(np.float32)


BUILDERS = {
    'fedmf': lambda n: fedmf.build_fedmf(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING),
    'mf_local': lambda n: mf_local.build_mf_local(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING),
    'fedncf': lambda n: fedncf.build_fedncf(num_items=NUM_ITEMS, embedding_dim=D, hidden_units=(8,),
                                            training=TRAINING),
    'pfedrec': lambda n: pfedrec.build_pfedrec(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING),
    'fedrap': lambda n: fedrap.build_fedrap(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING),
    'gpfedrec': lambda n: gpfedrec.build_gpfedrec(num_items=NUM_ITEMS, num_clients=n, embedding_dim=D,
                                                  training=TRAINING),
    'fedcia': lambda n: fedcia.build_fedcia(num_items=NUM_ITEMS, embedding_dim=D, training=TRAINING,
                                            align_steps=2),
    'rqfedrec': lambda n: rqfedrec.build_rqfedrec(
        num_items=NUM_ITEMS, text_embeddings=_text(), embedding_dim=D, training=TRAINING,
        config=rqfedrec.RQConfig(levels=2, codes_per_level=4, kmeans_iterations=5)),
}


def _client_payload(process, state):
  payload = process.payload(state)
  if process.collect is None:
    return payload
  # a collecting round's client gets the broadcast and its own value (client 0's)
  return collections.OrderedDict(shared=payload, own=np.asarray(state[process_lib.CLIENT_MESSAGES][0]))


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_client_work_hands_the_cold_items_to_its_negative_sampler(tff_context, planted_problem, monkeypatch,
                                                                  name):
  _, clients = planted_problem
  process = BUILDERS[name](len(clients))
  seen = []
  draw = mf.round_examples

  def recording_draw(*args, excluded_items=None, **kwargs):
    seen.append(None if excluded_items is None else np.asarray(excluded_items).tolist())
    return draw(*args, excluded_items=excluded_items, **kwargs)

  monkeypatch.setattr(mf, 'round_examples', recording_draw)
  data = process_lib.client_data_values(clients[:1], seed=0, round_num=1, excluded_items=COLD)[0]
  payload = _client_payload(process, process.initialize())
  as_tensors = lambda value: tf.nest.map_structure(tf.constant, value)
  # eager, in plain TF, as the round-speed benchmark runs it
  process.client_fn(as_tensors(payload), as_tensors(process.initial_client_states(clients)[0]),
                    as_tensors(dict(data)))
  assert seen and all(items == COLD.tolist() for items in seen), seen

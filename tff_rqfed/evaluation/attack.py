"""An honest-but-curious server's attack on one client's upload: which items did the client train on?

The server knows what it broadcast and what client k uploaded in the same round. It scores every item
by how much that item's representation changed between the two and ranks the client's training items
(its positives) against all other items; the AUC of that ranking measures how much the upload gives
away (0.5: nothing). The representation of item i is:

- FedMF: row i of the item table (upload minus broadcast);
- RQFedRec: item i rebuilt through the public code ids from the uploaded codebooks, minus the same
  rebuild from the broadcast codebooks (Eq. 9);
- FedCIA: row i of the uploaded similarity E E^T (+ noise) minus row i of the broadcast mean
  similarity (its symmetric part, which the broadcast carries).

The upload is computed with the algorithm's own client function in plain TensorFlow
(`RecommenderProcess.client_fn`, the function the TFF client work was traced from), for the round after
`state`, with the client's private state; nothing else about the client is used.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics
import tensorflow as tf

from tff_rqfed.algorithms import rqfedrec
from tff_rqfed.federated import process as process_lib

ATTACKED = ('fedmf', 'rqfedrec', 'fedcia')


def item_change(name: str, payload, upload) -> np.ndarray:
  """float[I]: the L2 norm of each item's change between the broadcast and the upload (module doc)."""
  if name == 'fedmf':
    return np.linalg.norm(np.asarray(upload) - np.asarray(payload), axis=1)
  if name == 'rqfedrec':
    before = rqfedrec.rebuild_item_table(payload)
    after = rqfedrec.rebuild_item_table({**payload, 'codebooks': tf.convert_to_tensor(upload)})
    return np.linalg.norm(np.asarray(after) - np.asarray(before), axis=1)
  if name == 'fedcia':
    vectors, values = np.asarray(payload['eigenvectors']), np.asarray(payload['eigenvalues'])
    mean_similarity = (vectors * values) @ vectors.T
    return np.linalg.norm(np.asarray(upload) - mean_similarity, axis=1)
  raise ValueError(f'the upload attack is implemented for {ATTACKED}, not {name!r}')


def attack_auc(process: process_lib.RecommenderProcess, state, client_states, clients, *, num_items: int,
               seed: int, round_num: int) -> dict:
  """AUC of every client's training items against the others from its round-`round_num` upload.

  Returns {'attack_auc': mean over clients, 'attack_advantage': 2 |AUC - 0.5| (a leak in either
  direction: sampled negatives can change more than positives), 'attack_auc_min', 'attack_auc_max',
  'attack_round'}.
  """
  if process.name not in ATTACKED:
    raise ValueError(f'the upload attack is implemented for {ATTACKED}, not {process.name!r}')
  payload = tf.nest.map_structure(tf.convert_to_tensor, process.payload(state))
  client_fn = tf.function(process.client_fn, reduce_retracing=True)
  data = process_lib.client_data_values(clients, seed=seed, round_num=round_num)
  aucs = []
  for client, client_state, client_data in zip(clients, client_states, data):
    labels = np.zeros(num_items, bool)
    labels[np.unique(client.items)] = True
    if labels.all() or not labels.any():
      continue  # the AUC needs both classes
    upload = client_fn(payload, tf.nest.map_structure(tf.convert_to_tensor, client_state),
                       tf.nest.map_structure(tf.convert_to_tensor, dict(client_data))).upload
    aucs.append(metrics.roc_auc_score(labels, item_change(process.name, payload, upload)))
  auc = float(np.mean(aucs))
  return {'attack_auc': auc, 'attack_advantage': 2 * abs(auc - 0.5), 'attack_auc_min': float(np.min(aucs)),
          'attack_auc_max': float(np.max(aucs)), 'attack_round': round_num}


r"""Seconds per federated round of FedMF and RQFedRec on ML-100k, measured in one process.

  .venv/bin/python -m benchmarks.round_speed [--rounds=5] [--embedding_dim=512] [--clients=100]

Both algorithms run the same clients (paper protocol, blocks partition) with the same local-training
options; the first round (tracing and worker start) is reported apart from the steady-state mean.
Writes results/benchmarks/round_speed.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
import numpy as np

from tff_rqfed import execution, results_io
from tff_rqfed.algorithms import fedmf, rqfedrec
from tff_rqfed.data import movielens, partition, protocols, text
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.semantic import encoders

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Rounds per algorithm.')
_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.')
_CLIENTS = flags.DEFINE_integer('clients', 100, 'Clients (blocks partition).')
_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/round_speed.json', 'JSON output.')


def time_rounds(process, clients, rounds):
  state = process.initialize()
  client_states = process.initial_client_states(clients)
  seconds = []
  for round_num in range(1, rounds + 1):
    data = process_lib.client_data_values(clients, seed=0, round_num=round_num)
    start = time.perf_counter()
    state, client_states, _ = process.next(state, client_states, data, round_num=round_num)
    seconds.append(time.perf_counter() - start)
  return {'first_round_s': seconds[0], 'steady_mean_s': float(np.mean(seconds[1:])),
          'steady_std_s': float(np.std(seconds[1:])), 'rounds': rounds}


def main(argv):
  del argv
  dataset = movielens.load_movielens('ml-100k')
  split = protocols.make_split(dataset, protocol='paper', seed=0)
  clients = partition.build_clients(split, scheme='blocks', num_clients=_CLIENTS.value)
  execution.set_execution_context()
  common = dict(num_items=dataset.num_items, embedding_dim=_DIM.value, training=cw.LocalTraining())
  embeddings = encoders.item_text_embeddings(
      text.item_texts(dataset), dataset_name=dataset.name, cache_dir=movielens.default_cache_dir())
  results = {'dataset': 'ml-100k', 'clients': len(clients), 'embedding_dim': _DIM.value,
             'cpu_count': os.cpu_count()}
  # refresh_every=2 so the timed rounds include a collaborative-id refresh (RQ-kmeans + least squares).
  results['fedmf'] = time_rounds(fedmf.build_fedmf(**common), clients, _ROUNDS.value)
  results['rqfedrec'] = time_rounds(
      rqfedrec.build_rqfedrec(text_embeddings=embeddings, config=rqfedrec.RQConfig(refresh_every=2),
                              **common), clients, _ROUNDS.value)
  print(json.dumps(results, indent=2))
  results_io.write_atomic(pathlib.Path(_OUTPUT.value), json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  app.run(main)

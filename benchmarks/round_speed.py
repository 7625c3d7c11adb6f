r"""Seconds per federated round, split into stages, with TFF's overhead against plain TensorFlow.

  .venv/bin/python -m benchmarks.round_speed [--algorithms=fedmf,rqfedrec,mf_local,fedncf,pfedrec,fedrap,fedrlm_con,fedrlm_gen] \
      [--dataset=ml-100k] [--partition=blocks] [--clients=100] [--rounds=5] \
      [--max_concurrent_computation_calls=-1] [--intra_op_threads=0] [--inter_op_threads=0] \
      [--client_shards=1] [--workers=0]

For each algorithm, on the same clients (paper protocol) and local-training options, it runs `--rounds`
TFF rounds (the first, with tracing and the worker's start, reported apart) and measures per round:

* `round_s`: the TFF round (`RecommenderProcess.federated_round`: broadcast, client work,
  federated_mean, server update, and the transfer of client states in and out of the worker);
* `server_s`: server program logic between rounds (RQFedRec's collaborative-id refresh every
  `--refresh_every` rounds, here 2 so the timed rounds include refreshes);
* `eval_s`: scoring every user against every item and the validation metrics;
* `state_transfer_s`: moving every client's private state into the worker and back, alone (an
  identity `federated_map`), the part of `round_s` that grows with the state's size (mf_local keeps
  a whole item table per client).

Then, in this process, without TFF, it runs the *same* client function (`RecommenderProcess.client_fn`,
which the algorithm's `tff.tensorflow.computation` is traced from) as a `tf.function` over every
client of one round, on as many threads as the worker has cores, plus the weighted mean in NumPy:
`plain_round_s`; this process uses the worker's thread pools and, like TFF's sessions, no Grappler.
`tff_overhead` = (round_s - plain_round_s) / round_s. For RQFedRec it also times the
client stages apart: the Eq. 9 rebuild, local training (Eq. 3) and the codebook fit (Eq. 7).
`worker_peak_gib` is the worker's peak resident memory (VmHWM; the largest one's with several, and
`workers_peak_total_gib` their sum); the worker is restarted for each algorithm. With
`--client_shards=S` the rounds run over S client shards (`federated.sharding`) and with `--workers=N`
on N local workers (`execution.local_workers`), as `launchers.simulate` does. Writes JSON
(`--output`) and prints a Markdown table.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import pathlib
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import execution, results_io, simulation, worker_processes
from tff_rqfed.algorithms import fedmf, fedncf, fedrap, fedrlm, mf_local, pfedrec, rqfedrec
from tff_rqfed.data import movielens, partition, protocols, text
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.models import mf
from tff_rqfed.semantic import encoders

ALGORITHMS = ('fedmf', 'rqfedrec', 'mf_local', 'fedncf', 'pfedrec', 'fedrap', 'fedrlm_con', 'fedrlm_gen')
DEFAULT_ALGORITHMS = ALGORITHMS[:6]  # FedRLM only when asked: its rounds are slow (docs/RESULTS.md, Table 5)
BASELINES = {'fedncf': fedncf.build_fedncf, 'pfedrec': pfedrec.build_pfedrec, 'fedrap': fedrap.build_fedrap}
TEXT_ALGORITHMS = ('rqfedrec', 'fedrlm_con', 'fedrlm_gen')  # they read the items' text embeddings
_ALGORITHMS = flags.DEFINE_list('algorithms', list(DEFAULT_ALGORITHMS), f'Subset of {ALGORITHMS}.')
_DATASET = flags.DEFINE_enum('dataset', 'ml-100k', ['ml-100k', 'ml-1m'], 'Dataset.')
_PARTITION = flags.DEFINE_enum('partition', 'blocks', list(partition.SCHEMES), 'Client partition.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Rounds per algorithm (the first is reported apart).')
_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.')
_CLIENTS = flags.DEFINE_integer('clients', 100, 'Clients (blocks partition).')
_REFRESH = flags.DEFINE_integer('refresh_every', 2, 'RQFedRec tau, so timed rounds include refreshes.')
_PLAIN = flags.DEFINE_bool('plain_tf', True, 'Also time the client work in plain TensorFlow.')
_WORKER = execution.WorkerConfig()
_CONCURRENCY = flags.DEFINE_integer(
    'max_concurrent_computation_calls', _WORKER.max_concurrent_computation_calls,
    'Worker: client computations at once (-1: no limit).')
_INTER = flags.DEFINE_integer('inter_op_threads', _WORKER.inter_op_threads,
                              'Worker: TF inter-op threads (0: TF default).')
_INTRA = flags.DEFINE_integer('intra_op_threads', _WORKER.intra_op_threads,
                              'Worker: TF intra-op threads (0: TF default).')
_SHARDS = flags.DEFINE_integer('client_shards', 1, "A round's clients in this many shards "
                               '(federated.sharding; 1: the one-computation round).', lower_bound=1)
_WORKERS = flags.DEFINE_integer('workers', 0, 'Local TFF workers running the shards, each with the '
                                'worker flags above (0: the one worker of the default context).',
                                lower_bound=0)
_OUTPUT = flags.DEFINE_string('output', None,
                              'JSON output (default results/benchmarks/round_speed-DATASET-PARTITION.json).')


def _mean_std(values):
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def build(name, dataset, embeddings):
  common = dict(num_items=dataset.num_items, embedding_dim=_DIM.value, training=cw.LocalTraining(),
                init_scale=0.01, seed=0)
  if name == 'fedmf':
    return fedmf.build_fedmf(**common)
  if name == 'mf_local':
    return mf_local.build_mf_local(**common)
  if name in BASELINES:
    return BASELINES[name](**common)
  if name in fedrlm.ALGORITHM_VARIANTS:
    return fedrlm.build_fedrlm(variant=fedrlm.ALGORITHM_VARIANTS[name], profile_embeddings=embeddings,
                               **common)
  codes = 256 if dataset.name == 'ml-100k' else 512
  config = rqfedrec.RQConfig(codes_per_level=codes, refresh_every=_REFRESH.value)
  return rqfedrec.build_rqfedrec(text_embeddings=embeddings, config=config, **common)


def worker_peaks_gib() -> list[float]:
  """Peak resident memory (VmHWM) of each of this process's TFF workers still running."""
  peaks = [worker_processes.peak_memory_gib(pid) for pid in worker_processes.worker_pids()]
  return [peak for peak in peaks if peak is not None]


def time_tff(process, clients, split, workers=None):
  """TFF rounds: round, server logic and evaluation seconds; returns (stats, state, client_states)."""
  state = process.initialize()
  client_states = process.initial_client_states(clients)
  rounds, server, evals = [], [], []
  first_state = None
  for round_num in range(1, _ROUNDS.value + 1):
    data = process_lib.client_data_values(clients, seed=0, round_num=round_num)
    start = time.perf_counter()
    state, client_states, _ = process.federated_round(state, client_states, data,
                                                       shards=_SHARDS.value, workers=workers)
    rounds.append(time.perf_counter() - start)
    if process.after_round is not None:
      start = time.perf_counter()
      state, _ = process.after_round(state, round_num)
      server.append(time.perf_counter() - start)
    start = time.perf_counter()
    scores = process.scores(state, client_states, clients, split.num_users)
    simulation.evaluate_scores(scores, split, k=10, on='valid')
    evals.append(time.perf_counter() - start)
    if round_num == 1:
      first_state = (state, client_states)
  return {
      'first_round_s': rounds[0],
      'round_s': _mean_std(rounds[1:]),
      'server_s': _mean_std(server[1:]) if server else None,
      'eval_s': _mean_std(evals[1:]),
      'worker_peak_gib': max(worker_peaks_gib(), default=None),
      'workers_peak_total_gib': sum(worker_peaks_gib()),
  }, first_state


def time_state_transfer(process, client_states, repeats: int = 3) -> float:
  """Seconds to move every client's private state into the worker and back (no computation)."""
  state_type = process.round_type_signature.parameter[1].member

  @tff.tensorflow.computation(state_type)
  def identity(state):
    return tf.nest.map_structure(tf.identity, state)

  @tff.federated_computation(tff.FederatedType(state_type, tff.CLIENTS))
  def round_trip(states):
    return tff.federated_map(identity, states)

  round_trip(client_states[:2])
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    round_trip(client_states)
    seconds.append(time.perf_counter() - start)
  return float(np.mean(seconds))


def _run_clients(fn, client_args, threads):
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    return list(pool.map(lambda args: fn(*args), client_args))


def _time_clients(fn, client_args, threads):
  """(outputs, seconds) of `fn` as a `tf.function` over every client, traced beforehand."""
  fn = tf.function(fn, reduce_retracing=True)
  _run_clients(fn, client_args[:threads], threads)  # trace
  start = time.perf_counter()
  outputs = _run_clients(fn, client_args, threads)
  return outputs, time.perf_counter() - start


def time_plain(process, state, client_states, clients, extra_stages):
  """The round's client work and mean in plain TF, same client function, `cpu_count` threads."""
  threads = os.cpu_count() or 1
  payload = tf.nest.map_structure(tf.constant, process.payload(state))
  data = [tf.nest.map_structure(tf.constant, dict(d)) for d in
          process_lib.client_data_values(clients, seed=0, round_num=2)]
  args = [(payload, tf.nest.map_structure(tf.constant, s), d) for s, d in zip(client_states, data)]
  outputs, client_s = _time_clients(process.client_fn, args, threads)
  start = time.perf_counter()
  weights = np.array([float(o.weight) for o in outputs])
  if process.upload_type is not None:  # the weighted mean of every uploaded tensor
    uploads = [tf.nest.map_structure(np.asarray, o.upload) for o in outputs]
    _ = tf.nest.map_structure(
        lambda *parts: sum(w * part for w, part in zip(weights, parts)) / weights.sum(), *uploads)
  mean_s = time.perf_counter() - start
  result = {'plain_client_s': client_s, 'plain_mean_s': mean_s, 'plain_round_s': client_s + mean_s}
  for name, stage in extra_stages.items():
    _, result[f'plain_{name}_s'] = _time_clients(stage, args, threads)
  return result


def rqfedrec_stages(num_items):
  """RQFedRec's client stages as functions of (payload, users, data), for plain-TF timing."""
  training = cw.LocalTraining()

  def rebuild(payload, users, data):
    del users, data
    return rqfedrec.rebuild_item_table(payload)

  def rebuild_and_train(payload, users, data):
    table = rebuild(payload, users, data)
    rows, coefficients = mf.identity_parameterisation(num_items)
    return cw.train_on_items(users, table, rows, coefficients, data, training)

  return {'rebuild': rebuild, 'rebuild_and_train': rebuild_and_train}


def main(argv):
  del argv
  dataset = movielens.load_movielens(_DATASET.value)
  split = protocols.make_split(dataset, protocol='paper', seed=0)
  clients = partition.build_clients(split, scheme=_PARTITION.value, num_clients=_CLIENTS.value)
  worker = execution.WorkerConfig(
      max_concurrent_computation_calls=_CONCURRENCY.value, inter_op_threads=_INTER.value,
      intra_op_threads=_INTRA.value)
  # This process runs TF as the worker does (its thread pools; no Grappler, as TFF's sessions are
  # built), so the plain-TF figure is the same work under the same runtime settings. `eval_s` is
  # therefore measured with single-threaded kernels (the launcher's evaluation uses TF's defaults).
  tf.config.threading.set_inter_op_parallelism_threads(worker.inter_op_threads)
  tf.config.threading.set_intra_op_parallelism_threads(worker.intra_op_threads)
  tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
  execution.set_execution_context(worker)
  embeddings = None
  if set(TEXT_ALGORITHMS) & set(_ALGORITHMS.value):
    embeddings = encoders.item_text_embeddings(
        text.item_texts(dataset), dataset_name=dataset.name, cache_dir=movielens.default_cache_dir())
  results = collections.OrderedDict(
      dataset=dataset.name, partition=_PARTITION.value, clients=len(clients),
      embedding_dim=_DIM.value, cpu_count=os.cpu_count(), worker=worker.__dict__,
      client_shards=_SHARDS.value, workers=_WORKERS.value, algorithms={})
  for name in _ALGORITHMS.value:
    if name not in ALGORITHMS:
      raise app.UsageError(f'--algorithms: unknown {name!r}; valid: {ALGORITHMS}')
    execution.kill_workers()  # a fresh worker per algorithm, so its peak memory is its own
    execution.set_execution_context(worker)
    workers = execution.local_workers(_WORKERS.value, worker) if _WORKERS.value else None
    process = build(name, dataset, embeddings)
    stages = rqfedrec_stages(dataset.num_items) if name == 'rqfedrec' else {}
    stats, (state, client_states) = time_tff(process, clients, split, workers)
    stats['state_transfer_s'] = time_state_transfer(process, client_states)
    if _PLAIN.value:
      stats.update(time_plain(process, state, client_states, clients, stages))
      if stages:  # RQFedRec: client = Eq. 9 rebuild + local training + Eq. 7 fit
        stats['plain_local_training_s'] = stats['plain_rebuild_and_train_s'] - stats['plain_rebuild_s']
        stats['plain_codebook_fit_s'] = stats['plain_client_s'] - stats['plain_rebuild_and_train_s']
      stats['tff_overhead'] = (stats['round_s']['mean'] - stats['plain_round_s']) / stats['round_s']['mean']
    results['algorithms'][name] = stats
    print(json.dumps({name: stats}, indent=2), flush=True)
  suffix = ((f'-s{_SHARDS.value}' if _SHARDS.value > 1 else '')
            + (f'-w{_WORKERS.value}' if _WORKERS.value else ''))
  output = pathlib.Path(_OUTPUT.value or
                        f'results/benchmarks/round_speed-{dataset.name}-{_PARTITION.value}{suffix}.json')
  results_io.write_atomic(output, json.dumps(results, indent=2) + '\n')
  print(markdown_table(results))


def markdown_table(results) -> str:
  header = ('| algorithm | dataset | clients | round s | server s | eval s | state transfer s | '
            'plain-TF round s | TFF overhead | worker peak GiB |')
  lines = [header, '|---' * 10 + '|']
  for name, s in results['algorithms'].items():
    server = f"{s['server_s']['mean']:.2f}" if s.get('server_s') else '-'
    plain = f"{s['plain_round_s']:.2f}" if 'plain_round_s' in s else '-'
    overhead = f"{100 * s['tff_overhead']:.0f}%" if 'tff_overhead' in s else '-'
    peak = f"{s['worker_peak_gib']:.2f}" if s.get('worker_peak_gib') else '-'
    lines.append(f"| {name} | {results['dataset']} ({results['partition']}) | {results['clients']} | "
                 f"{s['round_s']['mean']:.2f} ± {s['round_s']['std']:.2f} | {server} | "
                 f"{s['eval_s']['mean']:.2f} | {s['state_transfer_s']:.2f} | {plain} | {overhead} | "
                 f"{peak} |")
  return '\n'.join(lines)


if __name__ == '__main__':
  app.run(main)

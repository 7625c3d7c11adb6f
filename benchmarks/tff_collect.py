"""What it costs to move one [I, d] table per client between the server and K clients in TFF 0.87.

GPFedRec's server needs every client's uploaded item table apart (to build a graph over the clients)
and sends each client its own table back. This measures, in the TFF worker this project uses
(`execution.set_execution_context`), with K clients and I x d float32 tables (default ML-100k's
1682 x 512, 3.4 MB each):

- `select`: `tff.federated_select` of row k of a SERVER-placed float32[K, I, d] to client k (what
  `process.build_collecting_round_process` used for the per-client values until it took them as a
  CLIENTS-placed input, which holds no SERVER-placed [K, I, d] in the worker);
- `return`: a round that returns the K tables CLIENTS-placed to this process (what the collecting
  round does with the uploads);
- `aggregate`: collecting the K tables into one SERVER-placed float32[K, I, d] inside the
  computation with `tff.federated_aggregate` and a concatenating accumulator (sorted by client index
  at the end), the only TFF aggregation that keeps the uploads apart. The runtime keeps every partial
  accumulator alive, so its memory grows as K^2: 7.3 GiB at 50 clients; at 100 clients the worker
  reached 20-23 GB and was killed on a 24 GB machine (hence the default of 50). A [K, I, d] zero
  accumulator written with `tf.tensor_scatter_nd_update` is worse (`--scatter` tries it; it can take
  the machine's memory).

Each is run `--repeats` times (the best is reported) after one warm-up call; the worker's peak
resident memory (VmHWM, cumulative over the run, so later rows include earlier ones) is read after
each. Writes JSON (default `results/benchmarks/tff_collect.json`) and prints a table.

    python -m benchmarks.tff_collect [--clients=50] [--items=1682] [--embedding_dim=512]
"""

from __future__ import annotations

import collections
import json
import pathlib
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rqfed import execution, results_io, worker_processes

_CLIENTS = flags.DEFINE_integer('clients', 50, 'K (100 needs more than 24 GB for the aggregate).')
_ITEMS = flags.DEFINE_integer('items', 1682, 'I.')
_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed calls per form.')
_SCATTER = flags.DEFINE_bool('scatter', False, 'Also try the [K, I, d] scatter accumulator (memory!).')
_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/tff_collect.json', 'JSON output.')


def _worker_peak_mb() -> float:
  peaks = [worker_processes.peak_memory_gib(pid) for pid in worker_processes.worker_pids()]
  return max([peak * 1024 for peak in peaks if peak is not None], default=0.0)


def _computations(k, i, d):
  table_t = tff.TensorType(np.float32, [i, d])
  stack_t = tff.TensorType(np.float32, [k, i, d])
  index_t = tff.TensorType(np.int32)

  @tff.tensorflow.computation(index_t)
  def client_table(index):
    return tf.fill([i, d], tf.cast(index, tf.float32))

  @tff.tensorflow.computation
  def server_stack():
    return tf.broadcast_to(tf.range(k, dtype=tf.float32)[:, None, None], [k, i, d])

  @tff.tensorflow.computation(stack_t, index_t)
  def select_row(stack, key):
    return tf.gather(stack, key)

  @tff.tensorflow.computation(tff.SequenceType(table_t))
  def first_value(rows):
    return rows.reduce(tf.constant(-1.0), lambda _, row: row[0, 0])

  @tff.tensorflow.computation(index_t)
  def as_key(index):
    return tf.reshape(index, [1])

  @tff.federated_computation(tff.FederatedType(index_t, tff.CLIENTS))
  def select(indices):
    rows = tff.federated_select(tff.federated_map(as_key, indices), tff.federated_value(k, tff.SERVER),
                                tff.federated_eval(server_stack, tff.SERVER), select_row)
    return tff.federated_map(first_value, rows)

  @tff.federated_computation(tff.FederatedType(index_t, tff.CLIENTS))
  def return_tables(indices):
    return tff.federated_map(client_table, indices)

  upload_t = tff.types.to_type(collections.OrderedDict(table=table_t, index=index_t))
  acc_t = tff.types.to_type(collections.OrderedDict(
      tables=tff.TensorType(np.float32, [None, i, d]), index=tff.TensorType(np.int32, [None])))

  @tff.tensorflow.computation(index_t)
  def upload(index):
    return collections.OrderedDict(table=tf.fill([i, d], tf.cast(index, tf.float32)), index=index)

  @tff.tensorflow.computation
  def zero():
    return collections.OrderedDict(tables=tf.zeros([0, i, d]), index=tf.zeros([0], tf.int32))

  @tff.tensorflow.computation(acc_t, upload_t)
  def accumulate(acc, value):
    return collections.OrderedDict(tables=tf.concat([acc['tables'], value['table'][None]], 0),
                                   index=tf.concat([acc['index'], value['index'][None]], 0))

  @tff.tensorflow.computation(acc_t, acc_t)
  def merge(a, b):
    return collections.OrderedDict(tables=tf.concat([a['tables'], b['tables']], 0),
                                   index=tf.concat([a['index'], b['index']], 0))

  @tff.tensorflow.computation(acc_t)
  def report(acc):
    return tf.reduce_sum(tf.gather(acc['tables'], tf.argsort(acc['index']))[:, 0, 0])

  @tff.federated_computation(tff.FederatedType(index_t, tff.CLIENTS))
  def aggregate(indices):
    return tff.federated_aggregate(tff.federated_map(upload, indices), zero(), accumulate, merge,
                                   report)

  @tff.tensorflow.computation
  def zero_stack():
    return tf.zeros([k, i, d])

  @tff.tensorflow.computation(stack_t, upload_t)
  def scatter(acc, value):
    return tf.tensor_scatter_nd_update(acc, [[value['index']]], value['table'][None])

  @tff.tensorflow.computation(stack_t, stack_t)
  def add(a, b):
    return a + b

  @tff.tensorflow.computation(stack_t)
  def total(acc):
    return tf.reduce_sum(acc[:, 0, 0])

  @tff.federated_computation(tff.FederatedType(index_t, tff.CLIENTS))
  def aggregate_scatter(indices):
    return tff.federated_aggregate(tff.federated_map(upload, indices), zero_stack(), scatter, add,
                                   total)

  forms = [('select', select), ('return', return_tables), ('aggregate', aggregate)]
  return forms + ([('aggregate_scatter', aggregate_scatter)] if _SCATTER.value else [])


def main(argv):
  del argv
  execution.set_execution_context()
  k, i, d = _CLIENTS.value, _ITEMS.value, _DIM.value
  indices = [np.int32(index) for index in range(k)]
  rows = []
  for name, computation in _computations(k, i, d):
    computation(indices)  # warm-up
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      computation(indices)
      times.append(time.perf_counter() - start)
    rows.append(dict(form=name, clients=k, items=i, embedding_dim=d, seconds=min(times),
                     worker_peak_mb=_worker_peak_mb()))
  print(f'{k} clients, one float32[{i}, {d}] table each ({i * d * 4 / 2**20:.1f} MiB)')
  print(f'{"form":>18} {"seconds":>8} {"worker peak MiB":>16}')
  for row in rows:
    print(f'{row["form"]:>18} {row["seconds"]:>8.2f} {row["worker_peak_mb"]:>16.0f}')
  path = pathlib.Path(_OUTPUT.value)
  results_io.write_atomic(path, json.dumps(dict(rows=rows), indent=2) + '\n')
  print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)

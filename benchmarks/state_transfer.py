r"""What moving the clients' private tables into and out of the TFF worker costs, phase by phase.

  .venv/bin/python -m benchmarks.state_transfer [--clients=100] [--rows=1682] [--dim=512] [--repeats=3]

mf_local, FedCIA, FedRAP, PFedRec and GPFedRec keep a private table per client (ML-100k: 1,682 x 512
float32, 3.4 MB), which enters and leaves the worker every round (docs/SPEED.md, "Seconds per round":
5.9 s of mf_local's 10.2). This script times one CLIENTS-placed float32[rows, dim] per client sent
in (`federated_map` of a sum: nothing comes back but a scalar) and sent in and out (`federated_map`
of x + 1), with the worker settings of `execution.WorkerConfig`, and splits each call by phase.

TFF 0.87's local C++ context drives its worker from Python: `executor_factory.local_cpp_executor_factory`
builds a `remote_executor.RemoteExecutor` over a Python gRPC stub. The phases are timed by wrapping
that path's functions (TFF internals, for measurement only): `value_serialization.serialize_value`
(Python protos of the arguments), the stub's `create_value` (the argument through gRPC into the worker,
which parses it), `compute` (the result out of the worker), `value_serialization.deserialize_value`
(Python arrays of the result); "other" is the rest of the call (the clients' computations and the
calls that carry no data). Beside the wall seconds, the CPU seconds each process spent during the
call (this process: `os.times`; the worker: /proc/PID/stat) say which side does the work. Writes
results/benchmarks/state_transfer.json and prints a table.
"""

from __future__ import annotations

import collections
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
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.executors import value_serialization

from tff_rqfed import execution
from tff_rqfed import results_io
from tff_rqfed import worker_processes

_CLIENTS = flags.DEFINE_integer('clients', 100, 'Clients, each with one table.')
_ROWS = flags.DEFINE_integer('rows', 1682, 'Rows of each client\'s table (ML-100k: 1,682 items).')
_DIM = flags.DEFINE_integer('dim', 512, 'Columns of each table (d).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls of each computation (after one untimed).')
_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/state_transfer.json', 'JSON output.')

PHASES = ('serialize', 'grpc create_value', 'grpc compute', 'deserialize')
_seconds = collections.Counter()  # phase -> seconds, filled by the wrapped functions


def _timed(owner, name: str, phase: str) -> None:
  """Replaces `owner.name` by a wrapper that adds its wall time to `_seconds[phase]`."""
  function = getattr(owner, name)

  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return function(*args, **kwargs)
    finally:
      _seconds[phase] += time.perf_counter() - start

  setattr(owner, name, wrapper)


def _computations(rows: int, dim: int) -> dict:
  table = tff.TensorType(np.float32, [rows, dim])

  @tff.tensorflow.computation(table)
  def total(x):
    return tf.reduce_sum(x)

  @tff.tensorflow.computation(table)
  def plus_one(x):
    return x + 1.0

  @tff.federated_computation(tff.FederatedType(table, tff.CLIENTS))
  def send_in(tables):
    return tff.federated_map(total, tables)

  @tff.federated_computation(tff.FederatedType(table, tff.CLIENTS))
  def send_in_and_out(tables):
    return tff.federated_map(plus_one, tables)

  return {'in': send_in, 'in and out': send_in_and_out}


def _worker_cpu_seconds() -> float:
  """User plus system CPU seconds of this process's TFF workers so far (/proc/PID/stat)."""
  return sum(worker_processes.cpu_seconds(pid) for pid in worker_processes.worker_pids())


def _own_cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def _measure(computation, tables, repeats: int) -> dict:
  computation(tables)  # tracing and the worker's first call, untimed
  calls = []
  for _ in range(repeats):
    _seconds.clear()
    own, worker, start = _own_cpu_seconds(), _worker_cpu_seconds(), time.perf_counter()
    computation(tables)
    total = time.perf_counter() - start
    calls.append({'total': total, **{phase: _seconds[phase] for phase in PHASES},
                  'other': total - sum(_seconds[phase] for phase in PHASES),
                  'cpu this process': _own_cpu_seconds() - own,
                  'cpu worker': _worker_cpu_seconds() - worker})
  return {key: [call[key] for call in calls] for key in calls[0]}


def main(argv):
  del argv
  for phase, (owner, name) in {
      'serialize': (value_serialization, 'serialize_value'),
      'deserialize': (value_serialization, 'deserialize_value'),
      'grpc create_value': (remote_executor_grpc_stub.RemoteExecutorGrpcStub, 'create_value'),
      'grpc compute': (remote_executor_grpc_stub.RemoteExecutorGrpcStub, 'compute')}.items():
    _timed(owner, name, phase)
  execution.set_execution_context()
  rng = np.random.default_rng(0)
  tables = [rng.random((_ROWS.value, _DIM.value), dtype=np.float32) for _ in range(_CLIENTS.value)]
  megabytes = sum(t.nbytes for t in tables) / 1e6
  result = {'clients': _CLIENTS.value, 'rows': _ROWS.value, 'dim': _DIM.value,
            'megabytes_each_way': megabytes, 'cores': os.cpu_count(), 'seconds': {}}
  print(f'{_CLIENTS.value} clients x float32[{_ROWS.value}, {_DIM.value}] = {megabytes:.0f} MB each way')
  columns = ('total', *PHASES, 'other', 'cpu this process', 'cpu worker')
  print('| call | ' + ' | '.join(f'{column} s' for column in columns) + ' |')
  print('|---|' + '---|' * len(columns))
  for name, computation in _computations(_ROWS.value, _DIM.value).items():
    seconds = _measure(computation, tables, _REPEATS.value)
    result['seconds'][name] = seconds
    print(f'| {name} | ' + ' | '.join(f'{np.mean(seconds[key]):.2f} ± {np.std(seconds[key]):.2f}'
                                      for key in columns) + ' |')
  output = pathlib.Path(_OUTPUT.value)
  results_io.write_atomic(output, json.dumps(result, indent=2) + '\n')
  print(f'wrote {output}')


if __name__ == '__main__':
  app.run(main)

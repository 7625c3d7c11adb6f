"""The TFF execution context leaves no worker behind and does not hold the caller's pipes open.

The scenario runs in a Python subprocess so that killing workers there cannot touch the worker of
this pytest session; `subprocess.run(..., capture_output=True, timeout=...)` only returns
once every holder of the child's stdout/stderr pipes has closed them, so a worker that outlived its
parent would make it time out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One subprocess, two workers: the first is stopped by `kill_workers`; the script then installs a
# fresh context, runs again and exits without calling `kill_workers`, so the atexit hook must stop the
# second worker and release the pipes.
_SCRIPT = textwrap.dedent('''
    import json, os
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    import numpy as np
    import tensorflow_federated as tff
    from tff_rqfed import execution

    @tff.tensorflow.computation(tff.TensorType(np.int32))
    def add_one(x):
      return x + 1

    execution.set_execution_context()
    first_result = int(add_one(41))
    first = execution.worker_pids()
    with open(f'/proc/{first[0]}/environ', 'rb') as f:
      worker_env = dict(item.decode().split('=', 1) for item in f.read().split(b'\\0') if b'=' in item)
    worker_env = {k: v for k, v in worker_env.items() if k.startswith('TF_NUM_')}
    killed = execution.kill_workers()
    after_kill = execution.worker_pids()
    execution.set_execution_context()
    second_result = int(add_one(1))
    second = execution.worker_pids()
    print(json.dumps(dict(first_result=first_result, first=first, killed=killed,
                          after_kill=after_kill, second_result=second_result, second=second,
                          worker_env=worker_env, cpu_count=os.cpu_count())),
          flush=True)
''')


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


@pytest.fixture(scope='module')
def report():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  for name in ('TF_NUM_INTEROP_THREADS', 'TF_NUM_INTRAOP_THREADS'):  # the defaults must set them
    env.pop(name, None)
  try:
    proc = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
  except subprocess.TimeoutExpired:
    pytest.fail('the subprocess, or a TFF worker holding its stdout/stderr, did not exit')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kill_workers_stops_the_worker_that_ran_a_computation(report):
  assert report['first_result'] == 42
  assert len(report['first']) >= 1
  assert report['killed'] == len(report['first'])
  assert report['after_kill'] == []
  assert not any(_alive(pid) for pid in report['first'])


def test_process_exit_without_kill_workers_stops_the_worker_and_releases_pipes(report):
  # The fixture already checked that the subprocess exited and its pipes closed in time.
  assert report['second_result'] == 2
  assert len(report['second']) >= 1
  assert set(report['second']).isdisjoint(report['first'])
  deadline = time.monotonic() + 10
  while any(_alive(pid) for pid in report['second']) and time.monotonic() < deadline:
    time.sleep(0.2)
  leftover = [pid for pid in report['second'] if _alive(pid)]
  for pid in leftover:  # do not leave a stray worker on the machine if the test fails
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        if b'worker_binary' in f.read():
          os.kill(pid, 9)
    except OSError:
      pass
  assert leftover == []


def test_worker_pids_of_a_parent_without_workers_is_empty():
  from tff_rqfed import execution

  assert execution.worker_pids(parent=2**22 + 12345) == []


def test_worker_runs_with_the_worker_config_thread_pools(report):
  # WorkerConfig's defaults: one inter-op thread per core, single-threaded kernels.
  assert report['worker_env'] == {'TF_NUM_INTEROP_THREADS': str(report['cpu_count']),
                                  'TF_NUM_INTRAOP_THREADS': '1'}


@pytest.mark.parametrize('field, value', [('max_concurrent_computation_calls', 0),
                                          ('max_concurrent_computation_calls', -2),
                                          ('inter_op_threads', -1), ('intra_op_threads', -3)])
def test_worker_config_rejects_bad_values_and_names_them(field, value):
  from tff_rqfed import execution

  with pytest.raises(ValueError, match=f'{field}.*{value}'):
    execution.WorkerConfig(**{field: value})


def test_worker_config_zero_threads_leaves_tensorflow_defaults_to_the_worker():
  from tff_rqfed import execution

  env = execution.WorkerConfig(inter_op_threads=0, intra_op_threads=0).worker_environment()
  assert 'TF_NUM_INTEROP_THREADS' not in env and 'TF_NUM_INTRAOP_THREADS' not in env
  assert env['MALLOC_MMAP_THRESHOLD_']  # the heap settings are always passed

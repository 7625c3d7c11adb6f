"""The TFF execution context leaves no worker behind and does not hold the caller's pipes open.

The scenario runs in a Python subprocess so that killing workers there cannot touch the worker of
this pytest session; `subprocess.run(..., capture_output=True, timeout=...)` only returns
once every holder of the child's stdout/stderr pipes has closed them, so a worker that outlived its
parent would make it time out.
"""

from __future__ import annotations

import json
import re
import os
import select
import subprocess
import sys
import textwrap

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
    worker_env = {k: v for k, v in worker_env.items()
                  if k.startswith('TF_NUM_') or k == 'MALLOC_ARENA_MAX'}
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


@pytest.fixture(scope='module')
def report():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  # The defaults must set these.
  for name in ('TF_NUM_INTEROP_THREADS', 'TF_NUM_INTRAOP_THREADS', 'MALLOC_ARENA_MAX'):
    env.pop(name, None)
  try:
    proc = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
  except subprocess.TimeoutExpired:
    pytest.fail('the subprocess, or a TFF worker holding its stdout/stderr, did not exit')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kill_workers_stops_the_worker_that_ran_a_computation(report, workers_running_after):
  assert report['first_result'] == 42
  assert len(report['first']) >= 1
  assert report['killed'] == len(report['first'])
  assert report['after_kill'] == []
  assert workers_running_after(report['first'], timeout=0) == []


def test_process_exit_without_kill_workers_stops_the_worker_and_releases_pipes(
    report, workers_running_after):
  # The fixture already checked that the subprocess exited and its pipes closed in time.
  assert report['second_result'] == 2
  assert len(report['second']) >= 1
  assert set(report['second']).isdisjoint(report['first'])
  # The atexit hook kills and reaps the worker before the subprocess exits, so it is gone by now;
  # the short deadline only covers the kernel tearing it down.
  leftover = workers_running_after(report['second'], timeout=5)
  for pid in leftover:  # do not leave a stray worker on the machine if the test fails
    try:
      os.kill(pid, 9)
    except OSError:
      pass
  assert leftover == [], f'TFF workers {leftover} outlived their parent (no atexit kill_workers?)'


# A live parent with two children: one whose command line names the worker binary (a stand-in for
# the TFF worker; the name is assembled so that the parent's own command line does not contain it)
# and one that does not. Both exit when the parent's stdin closes.
_FAMILY = textwrap.dedent('''
    import json, subprocess, sys
    child = [sys.executable, '-c', 'import sys; sys.stdin.read()']
    fake_worker = subprocess.Popen(child + ['worker' + '_binary'], stdin=subprocess.PIPE)
    other = subprocess.Popen(child + ['not_a_worker'], stdin=subprocess.PIPE)
    print(json.dumps(dict(fake_worker=fake_worker.pid, other=other.pid)), flush=True)
    sys.stdin.read()
    for proc in (fake_worker, other):
      proc.stdin.close()
      proc.wait()
''')


def test_worker_pids_finds_only_the_worker_children_of_the_given_parent():
  from tff_rqfed import execution

  parent = subprocess.Popen([sys.executable, '-c', _FAMILY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
  try:
    ready, _, _ = select.select([parent.stdout], [], [], 60)
    assert ready, 'the parent process did not report its children within 60 s'
    line = parent.stdout.readline()
    assert line, 'the parent process exited before starting its children'
    children = json.loads(line)
    assert execution.worker_pids(parent=parent.pid) == [children['fake_worker']]
    # A live process without worker children, and this process (the workers are grandchildren).
    assert execution.worker_pids(parent=children['other']) == []
    assert children['fake_worker'] not in execution.worker_pids()
  finally:
    parent.stdin.close()
    try:
      parent.wait(timeout=30)
    except subprocess.TimeoutExpired:
      parent.kill()
      parent.wait()


def test_cpu_seconds_reads_a_processs_user_and_system_time_from_proc():
  import os
  import time
  from tff_rqfed import worker_processes

  before, own = worker_processes.cpu_seconds(os.getpid()), os.times()
  deadline = time.process_time() + 0.5
  while time.process_time() < deadline:  # half a second of CPU work
    pass
  used = worker_processes.cpu_seconds(os.getpid()) - before
  own_used = (os.times().user + os.times().system) - (own.user + own.system)
  assert 0.4 <= used <= own_used + 0.05  # clock-tick resolution: 10 ms at most


def test_worker_runs_with_the_worker_config_thread_pools(report):
  # WorkerConfig's defaults: one inter-op thread per core, single-threaded kernels, one glibc arena per core.
  assert report['worker_env'] == {'TF_NUM_INTEROP_THREADS': str(report['cpu_count']),
                                  'TF_NUM_INTRAOP_THREADS': '1',
                                  'MALLOC_ARENA_MAX': str(report['cpu_count'])}


@pytest.mark.parametrize('field, value', [('max_concurrent_computation_calls', 0),
                                          ('max_concurrent_computation_calls', -2),
                                          ('inter_op_threads', -1), ('intra_op_threads', -3),
                                          ('malloc_arenas', -1)])
def test_worker_config_rejects_bad_values_and_names_them(field, value):
  from tff_rqfed import execution

  with pytest.raises(ValueError, match=f'{field}.*{value}'):
    execution.WorkerConfig(**{field: value})


def test_worker_config_zero_leaves_tensorflow_and_glibc_defaults_to_the_worker():
  from tff_rqfed import execution

  env = execution.WorkerConfig(inter_op_threads=0, intra_op_threads=0, malloc_arenas=0).worker_environment()
  assert 'TF_NUM_INTEROP_THREADS' not in env and 'TF_NUM_INTRAOP_THREADS' not in env
  assert 'MALLOC_ARENA_MAX' not in env  # 0: glibc's own default
  assert env['MALLOC_MMAP_THRESHOLD_']  # the heap settings are always passed


# Several workers (execution.Workers): the shards of a round (federated.sharding) run on them.

def _add_one():
  import numpy as np
  import tensorflow_federated as tff

  @tff.tensorflow.computation(tff.TensorType(np.int32))
  def add_one(x):
    return x + 1

  return add_one


def test_workers_run_each_call_and_return_results_in_the_calls_order(tff_context):
  from tff_rqfed import execution

  workers = execution.local_workers(2, timeout_s=3.0)
  try:
    assert workers.count == 2
    assert [int(r) for r in workers.map(_add_one(), [(k,) for k in range(5)])] == [1, 2, 3, 4, 5]
  finally:
    for process in workers.processes:
      process.kill()
      process.wait()


def test_a_worker_that_dies_gives_an_error_naming_it_and_the_shard(tff_context):
  from tff_rqfed import execution

  workers = execution.local_workers(2, timeout_s=2.0)
  add_one = _add_one()
  workers.map(add_one, [(0,), (1,)])
  workers.processes[1].kill()
  workers.processes[1].wait()
  try:
    with pytest.raises(execution.WorkerError, match=r'local worker 1 .*client shard 1: .*stopped answering'):
      workers.map(add_one, [(0,), (1,)])
  finally:
    workers.processes[0].kill()
    workers.processes[0].wait()


def test_the_worker_launcher_serves_computations_to_remote_workers(tff_context):
  import portpicker
  from tff_rqfed import execution

  port = portpicker.pick_unused_port()
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  server = subprocess.Popen([sys.executable, '-m', 'launchers.worker', f'--port={port}'], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    workers = execution.remote_workers([f'localhost:{port}'], timeout_s=60.0)
    assert [int(r) for r in workers.map(_add_one(), [(1,), (2,)])] == [2, 3]
  finally:
    server.kill()
    server.wait()


def test_remote_workers_name_an_address_where_no_worker_answers():
  import portpicker
  from tff_rqfed import execution

  port = portpicker.pick_unused_port()
  with pytest.raises(execution.WorkerError, match=f'no TFF worker answers at localhost:{port}'):
    execution.remote_workers([f'localhost:{port}'], timeout_s=0.5)


@pytest.mark.parametrize('address', ['localhost', 'host:port', ':8000', 'host:0', 'host:70000'])
def test_a_bad_worker_address_is_quoted(address):
  from tff_rqfed import execution

  with pytest.raises(ValueError, match=re.escape(repr(address))):
    execution.parse_address(address)

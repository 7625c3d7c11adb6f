"""The TFF execution context leaves no worker behind and does not hold the caller's pipes open.

Each scenario runs in its own Python subprocess so that killing workers there cannot touch the
worker of this pytest session; `subprocess.run(..., capture_output=True, timeout=...)` only returns
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

_PRELUDE = textwrap.dedent('''
    import json, os
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    import numpy as np
    import tensorflow_federated as tff
    from tff_rqfed import execution

    execution.set_execution_context()

    @tff.tensorflow.computation(tff.TensorType(np.int32))
    def add_one(x):
      return x + 1

    result = int(add_one(41))
    before = execution.worker_pids()
''')

_KILL = _PRELUDE + textwrap.dedent('''
    killed = execution.kill_workers()
    after = execution.worker_pids()
    print(json.dumps(dict(result=result, before=before, killed=killed, after=after)), flush=True)
''')

# Exits without calling kill_workers: the atexit hook must stop the worker.
_EXIT = _PRELUDE + textwrap.dedent('''
    print(json.dumps(dict(result=result, before=before)), flush=True)
''')


def _start(script):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.Popen([sys.executable, '-c', script], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=120):
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    pytest.fail('the subprocess (or a worker holding its pipes) did not exit')
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


@pytest.fixture(scope='module')
def reports():
  # Both scenarios run at once to save wall time.
  procs = {'kill': _start(_KILL), 'exit': _start(_EXIT)}
  return {name: _finish(proc) for name, proc in procs.items()}


def test_kill_workers_stops_the_worker_that_ran_a_computation(reports):
  report = reports['kill']
  assert report['result'] == 42
  assert len(report['before']) >= 1
  assert report['killed'] == len(report['before'])
  assert report['after'] == []
  assert not any(_alive(pid) for pid in report['before'])


def test_process_exit_without_kill_workers_stops_the_worker_and_releases_pipes(reports):
  report = reports['exit']  # _finish already checked it exited and closed its pipes
  assert report['result'] == 42
  assert len(report['before']) >= 1
  deadline = time.monotonic() + 10
  while any(_alive(pid) for pid in report['before']) and time.monotonic() < deadline:
    time.sleep(0.2)
  leftover = [pid for pid in report['before'] if _alive(pid)]
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

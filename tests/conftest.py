"""Shared pytest set-up: quiet TensorFlow, one TFF execution context, and no worker left behind."""

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest


@pytest.fixture(scope='session')
def tff_context():
  """Installs TFF's local C++ execution context once for the tests that run computations."""
  from tff_rqfed import execution

  execution.set_execution_context()
  yield
  execution.kill_workers()


def _worker_running(pid):
  """True while `pid` is a running (not zombie) TFF worker; a reused PID is not the worker."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      running = f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return running and b'worker_binary' in f.read()
  except OSError:
    return False


def _workers_running_after(pids, *, timeout):
  """Waits up to `timeout` s for every TFF worker in `pids` to exit; returns those still running."""
  deadline = time.monotonic() + timeout
  while True:
    left = [pid for pid in pids if _worker_running(pid)]
    if not left or time.monotonic() > deadline:
      return left
    time.sleep(0.05)


@pytest.fixture(scope='session')
def workers_running_after():
  """`(pids, *, timeout) -> pids` of the TFF workers still running after waiting for them to exit."""
  return _workers_running_after


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  import sys

  if 'tff_rqfed.execution' in sys.modules:
    sys.modules['tff_rqfed.execution'].kill_workers()

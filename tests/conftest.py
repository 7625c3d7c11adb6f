"""Shared pytest set-up: quiet TensorFlow, one TFF execution context, and no worker left behind."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest


@pytest.fixture(scope='session')
def tff_context():
  """Installs TFF's local C++ execution context once for the tests that run computations."""
  from tff_rqfed import execution

  execution.set_execution_context()
  yield
  execution.kill_workers()


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  import sys

  if 'tff_rqfed.execution' in sys.modules:
    sys.modules['tff_rqfed.execution'].kill_workers()

"""Tests for tff_rqfed.devices: the server's stages on a GPU when one is visible, else the CPU.

This machine has no GPU: the GPU branch of `score_matrix` runs through TensorFlow's soft placement on
the CPU, which checks its arithmetic, not a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from tff_rqfed import devices

NO_GPU = not tf.config.list_physical_devices('GPU')


@pytest.mark.skipif(not NO_GPU, reason='a GPU is visible')
def test_without_a_gpu_every_stage_runs_on_the_cpu():
  assert devices.configure() == []
  assert devices.server_device() == '/CPU:0'
  with devices.stage('rq_kmeans_refresh') as device:
    value = tf.constant([1.0, 2.0]) * 2.0
  assert device == '/CPU:0' and value.device.endswith('CPU:0')


def test_an_unknown_stage_is_refused_and_quoted():
  with pytest.raises(ValueError, match="'kmeans'"):
    with devices.stage('kmeans'):
      pass


def test_each_stage_logs_its_device_once(caplog, monkeypatch):
  monkeypatch.setattr(devices, '_logged', set())
  with caplog.at_level(logging.INFO):
    for _ in range(3):
      with devices.stage('semantic_ids', '/CPU:0'):
        pass
  assert [r.getMessage() for r in caplog.records if 'stage' in r.getMessage()] == [
      'stage semantic_ids runs on /CPU:0']


def test_scoring_on_the_cpu_is_the_numpy_product_and_the_tensorflow_branch_agrees():
  rng = np.random.default_rng(0)
  users = rng.normal(size=(7, 16)).astype(np.float32)
  items = rng.normal(size=(11, 16)).astype(np.float32)
  on_cpu = devices.score_matrix(users, items, device='/CPU:0')
  np.testing.assert_array_equal(on_cpu, users @ items.T)  # CPU runs keep their numbers to the bit
  through_tf = devices.score_matrix(users, items, device='/GPU:0')  # soft placement without a GPU
  assert through_tf.shape == (7, 11) and through_tf.dtype == np.float32
  np.testing.assert_allclose(through_tf, on_cpu, rtol=1e-5, atol=1e-5)

"""Where the server's own stages run: a GPU of this Python process when TensorFlow sees one, else the CPU.

TFF's pip `worker_binary` is built without CUDA, so every TFF computation (the clients' work, the
aggregation, the server update) runs on the worker's CPU whatever the machine has. Three stages run
in this Python process between rounds instead, and only these can use a GPU (Sec. 4.3):

* `semantic_ids`: RQ-kmeans over the items' text embeddings, once at the start (Sec. 4.3.1);
* `rq_kmeans_refresh`: RQ-kmeans over the reconstructed item table every tau rounds (Sec. 4.3.2);
* `scoring`: every user against every item for the validation and test metrics.

`stage(name)` places a stage on `server_device()` (the first GPU, else `/CPU:0`) and logs the device
the first time the stage runs. `configure()` turns on memory growth for every GPU, so this process
takes GPU memory as the stages need it, not all of it at start (it must run before TensorFlow's
runtime starts; `execution.set_execution_context` calls it). Scoring on the CPU stays a NumPy product,
so CPU runs give the numbers they always gave; on a GPU it is `tf.matmul`, equal up to float rounding.

Not measured: this machine and CI have no GPU (`python -m launchers.gpu_check` says so and times the
stages on the CPU); the GPU branches are exercised on the CPU device only.
"""

from __future__ import annotations

import contextlib

from absl import logging
import numpy as np
import tensorflow as tf

STAGES = ('semantic_ids', 'rq_kmeans_refresh', 'scoring')
_logged: set[str] = set()


def configure() -> list[str]:
  """Sets memory growth on every visible GPU (before the TF runtime starts; later calls keep what
  was set) and returns the names of the visible GPUs."""
  gpus = tf.config.list_physical_devices('GPU')
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # the runtime already started: growth is fixed for this process
      pass
  return [gpu.name for gpu in gpus]


def server_device() -> str:
  """'/GPU:0' when TensorFlow sees a GPU in this process, else '/CPU:0'."""
  return '/GPU:0' if tf.config.list_logical_devices('GPU') else '/CPU:0'


@contextlib.contextmanager
def stage(name: str, device: str | None = None):
  """Runs the enclosed TensorFlow ops of stage `name` on `device` (default `server_device()`),
  logging the device the first time each stage runs; yields the device."""
  if name not in STAGES:
    raise ValueError(f'unknown stage {name!r}; stages: {STAGES}')
  device = device or server_device()
  if name not in _logged:
    logging.info('stage %s runs on %s', name, device)
    _logged.add(name)
  with tf.device(device):
    yield device


def score_matrix(users: np.ndarray, items: np.ndarray, *, device: str | None = None) -> np.ndarray:
  """float32[U, I] = users float32[U, d] x items float32[I, d]^T, the `scoring` stage: a NumPy product
  on the CPU, `tf.matmul` on a GPU."""
  with stage('scoring', device) as where:
    if 'GPU' not in where.upper():
      return np.asarray(users, np.float32) @ np.asarray(items, np.float32).T
    return tf.matmul(tf.constant(users, tf.float32), tf.constant(items, tf.float32),
                     transpose_b=True).numpy()

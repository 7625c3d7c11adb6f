r"""Times the server's GPU-capable stages on every device TensorFlow sees, against the CPU.

  python -m launchers.gpu_check [--repeats=2]

The stages are those `tff_rqfed.devices` places (`semantic_ids`, `rq_kmeans_refresh`, `scoring`), on
synthetic data of the paper's sizes (no dataset needed): RQ-kmeans with L = 3 over 1,682 x 512
(ML-100k, M = 256) and 3,706 x 512 (ML-1M, M = 512) points, and scoring 6,040 users against 3,706
items at d = 512. Each is run once to trace, then timed (best of `--repeats`). Prints one line per
stage and device, the speed-up against the CPU, and says plainly when there is no GPU. TFF's own
computations (the clients' work and the aggregation) are not here: TFF's pip worker has no CUDA and
runs them on the CPU whatever the machine has.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tff_rqfed import devices
from tff_rqfed.quantization import rq_kmeans

_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed runs per stage and device (the best is shown).',
                                lower_bound=1)


def _points(rows: int, d: int = 512, seed: int = 0) -> np.ndarray:
  """A Gaussian mixture of 64 clusters: embeddings with structure for k-means to find."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(64, d))
  return (centres[rng.integers(0, 64, rows)] + 0.5 * rng.normal(size=(rows, d))).astype(np.float32)


def stage_runs() -> list[tuple[str, str, callable]]:
  """(stage, size, run(device)) of every timed stage."""
  text = _points(1682, seed=1)
  items = _points(3706, seed=2)
  users = _points(6040, seed=3)

  def kmeans(points, codes, stage):
    def run(device):
      with devices.stage(stage, device):
        rq_kmeans.rq_kmeans(points, levels=3, codes_per_level=codes, seed=0)
    return run

  return [
      ('semantic_ids', '1682 x 512, L=3, M=256', kmeans(text, 256, 'semantic_ids')),
      ('rq_kmeans_refresh', '3706 x 512, L=3, M=512', kmeans(items, 512, 'rq_kmeans_refresh')),
      ('scoring', '6040 x 3706, d=512', lambda device: devices.score_matrix(users, items, device=device)),
  ]


def _seconds(run, device: str, repeats: int) -> float:
  run(device)  # traces the stage's functions on this device
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    run(device)
    best = min(best, time.perf_counter() - start)
  return best


def main(argv):
  del argv
  gpus = devices.configure()
  device_names = ['/CPU:0'] + [f'/GPU:{i}' for i in range(len(tf.config.list_logical_devices('GPU')))]
  if gpus:
    print(f'TensorFlow sees {len(gpus)} GPU(s): {", ".join(gpus)}; the stages below run on '
          f'{devices.server_device()} in a simulation.')
  else:
    print('No GPU is visible to TensorFlow in this process: every stage runs on the CPU (the timings '
          "below are the CPU's). TFF's worker runs the clients' work on the CPU in any case.")
  print('| stage | size | device | seconds | speed-up over the CPU |')
  print('|---|---|---|---|---|')
  for stage, size, run in stage_runs():
    cpu = None
    for device in device_names:
      seconds = _seconds(run, device, _REPEATS.value)
      cpu = cpu or seconds
      print(f'| {stage} | {size} | {device} | {seconds:.3f} | {cpu / seconds:.1f}x |', flush=True)


if __name__ == '__main__':
  app.run(main)

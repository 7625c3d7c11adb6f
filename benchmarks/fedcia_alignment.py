"""What FedCIA's alignment (100 SGD steps on ||E E^T - S||_F per client per round) costs, three ways.

For one client's item table `E: float32[I, d]` and a target `S: float32[I, I]` (the mean of noisy
E_k E_k^T of other random tables, as the server would send), times `--steps` alignment steps in plain
TensorFlow (`tf.function`, this process, all cores) in three exact forms:

- `literal`: the released code's loop, autodiff of tf.norm(E E^T - S): forms E E^T every step
  (two I x I x d products a step);
- `factored`: never forms E E^T: (E E^T - S_sym) E = E (E^T E) - S_sym E (one I x I x d and two
  I x d x d products a step);
- `spectral`: `models.similarity_alignment.align`, in the eigenbasis of S_sym (two I x d x d products a
  step, one I x I x d change of basis in and out; the `eigh` is the server's, once per round, timed
  apart as `eigh_s`).

It reports seconds per step, GFLOP per step, the largest difference of the aligned table from the
literal form's, and the alignment's share of a round: `--clients` clients x `--steps` steps. Writes
JSON (default `results/benchmarks/fedcia_alignment.json`) and prints a table.

    python -m benchmarks.fedcia_alignment [--items=1682,3706] [--steps=100] [--repeats=2]
"""

from __future__ import annotations

import json
import pathlib
import platform
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tff_rqfed import results_io
from tff_rqfed.models import similarity_alignment as sa

_ITEMS = flags.DEFINE_list('items', ['1682', '3706'], 'Item counts I (ML-100k, ML-1M).')
_DIM = flags.DEFINE_integer('embedding_dim', 512, 'd.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Alignment steps per client per round (released code: 100).')
_CLIENTS = flags.DEFINE_integer('clients', 100, 'Clients per round, to scale a client to a round.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed repeats per form (the best is reported).')
_LR, _WD = 0.1, 1e-6  # the released agg_lr and weight_decay (config/ml100k/fedmf.ini)
_OUTPUT = flags.DEFINE_string('output', 'results/benchmarks/fedcia_alignment.json', 'JSON output.')


def _problem(num_items, d, seed=0):
  rng = np.random.default_rng(seed)
  items = rng.normal(0, 0.01, (num_items, d)).astype(np.float32)
  others = rng.normal(0, 0.01, (4, num_items, d)).astype(np.float32)
  noise = rng.laplace(0, 0.001 / 10, (num_items, num_items)).astype(np.float32)
  similarity = np.mean([o @ o.T for o in others], axis=0) + noise
  return tf.constant(items), tf.constant(similarity)


def _literal(steps):
  @tf.function
  def run(items, similarity):
    def body(step, e):
      with tf.GradientTape() as tape:
        tape.watch(e)
        loss = tf.norm(tf.matmul(e, e, transpose_b=True) - similarity)
      return step + 1, e - _LR * (tape.gradient(loss, e) + _WD * e)
    return tf.while_loop(lambda step, _: step < steps, body, (tf.constant(0), items))[1]
  return run


def _factored(steps):
  @tf.function
  def run(items, similarity):
    symmetric = 0.5 * (similarity + tf.transpose(similarity))
    anti = tf.reduce_sum(tf.square(0.5 * (similarity - tf.transpose(similarity))))
    s_norm = tf.reduce_sum(tf.square(symmetric))
    def body(step, e):
      gram = tf.matmul(e, e, transpose_a=True)
      s_e = tf.matmul(symmetric, e)
      sq = (tf.reduce_sum(tf.square(gram)) - 2 * tf.reduce_sum(e * s_e) + s_norm + anti)
      norm = tf.sqrt(tf.maximum(sq, 0.0))
      return step + 1, e - _LR * (2 * (tf.matmul(e, gram) - s_e) / norm + _WD * e)
    return tf.while_loop(lambda step, _: step < steps, body, (tf.constant(0), items))[1]
  return run


def _spectral(steps):
  @tf.function
  def run(items, target):
    return sa.align(items, target, steps=steps, learning_rate=_LR, weight_decay=_WD)[0]
  return run


def _best_time(fn, *args, repeats):
  fn(*args)  # trace and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn(*args)
    result.numpy()
    times.append(time.perf_counter() - start)
  return min(times), result.numpy()


def measure(num_items, d, steps, repeats):
  items, similarity = _problem(num_items, d)
  start = time.perf_counter()
  target = tf.function(sa.spectral_target)(similarity)
  target.eigenvalues.numpy()
  eigh_s = time.perf_counter() - start
  literal_s, literal = _best_time(_literal(steps), items, similarity, repeats=repeats)
  factored_s, factored = _best_time(_factored(steps), items, similarity, repeats=repeats)
  spectral_s, spectral = _best_time(_spectral(steps), items, target, repeats=repeats)
  i, dd = float(num_items), float(d)
  flops = {'literal': 2 * 2 * i * i * dd, 'factored': 2 * (i * i * dd + 2 * i * dd * dd),
           'spectral': 2 * 2 * i * dd * dd}
  scale = float(np.abs(literal - items.numpy()).max())
  rows = []
  for form, seconds, table in (('literal', literal_s, literal), ('factored', factored_s, factored),
                               ('spectral', spectral_s, spectral)):
    rows.append(dict(
        items=num_items, embedding_dim=d, form=form, steps=steps, seconds=seconds,
        seconds_per_step=seconds / steps, gflop_per_step=flops[form] / 1e9,
        extra_gflop=(2 * 2 * i * i * dd / 1e9) if form == 'spectral' else 0.0,
        max_diff_from_literal=float(np.abs(table - literal).max()), literal_change=scale,
        round_seconds=seconds * _CLIENTS.value,
        eigh_seconds=eigh_s if form == 'spectral' else 0.0))
  return rows


def main(argv):
  del argv
  rows = []
  for num_items in (int(i) for i in _ITEMS.value):
    rows += measure(num_items, _DIM.value, _STEPS.value, _REPEATS.value)
  header = (f'{"I":>5} {"form":>9} {"s/step":>8} {"GFLOP/step":>10} {"max|diff|":>10} '
            f'{"change":>8} {"s/round":>8}')
  print(f'FedCIA alignment, d = {_DIM.value}, {_STEPS.value} steps per client, '
        f'{_CLIENTS.value} clients per round ({platform.node()}, {tf.config.threading.get_intra_op_parallelism_threads() or "all"} threads)')
  print(header)
  for r in rows:
    print(f'{r["items"]:>5} {r["form"]:>9} {r["seconds_per_step"]:>8.4f} {r["gflop_per_step"]:>10.2f} '
          f'{r["max_diff_from_literal"]:>10.2e} {r["literal_change"]:>8.2e} {r["round_seconds"]:>8.1f}')
  for r in rows:
    if r['form'] == 'spectral':
      print(f'I = {r["items"]}: the server eigh of S takes {r["eigh_seconds"]:.2f} s once per round')
  path = pathlib.Path(_OUTPUT.value)
  results_io.write_atomic(path, json.dumps(dict(rows=rows, steps=_STEPS.value, clients=_CLIENTS.value,
                                                learning_rate=_LR, weight_decay=_WD), indent=2) + '\n')
  print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)

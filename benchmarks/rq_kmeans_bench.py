"""Speed and quality of RQ-kmeans (paper Sec. 3.3, Eq. 2): ours vs scikit-learn level by level.

Runs :func:`tff_rqfed.quantization.rq_kmeans.rq_kmeans` and a level-by-level RQ built from
``sklearn.cluster.KMeans`` (n_init=1, greedy k-means++ like ours, the same iteration cap) on the
same synthetic Gaussian-mixture embedding tables at the paper's item counts:

* ML-100k size: 1682 x 512, L = 3, M = 256
* ML-1M size:   3706 x 512, L = 3, M = 512

and reports wall time and the final mean squared reconstruction error
``mean_i ||x_i - sum_l b_{q_l(i)}||^2`` as a printed table and as JSON (default
``results/benchmarks/rq_kmeans.json``, written atomically).

Both are run to the same stopping rule: ``tolerance=0`` for ours and ``tol=0`` for scikit-learn
stop a level when the assignment stops changing (or at the iteration cap); ours is also run with
its default ``tolerance=1e-6``.  Our wall time excludes the one-off ``tf.function`` tracing (a
warm-up call on tiny data, timed separately as ``trace_s``).  faiss is not compared: the only
faiss-cpu wheel available (1.15.1) fails to import under numpy 1.25 (it needs ``numpy._core``).

Usage: ``python benchmarks/rq_kmeans_bench.py [--seed 0] [--output PATH] [--iterations 50]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from tff_rqfed.quantization import rq_kmeans as rq  # noqa: E402

SETTINGS = (
    # name, n, d, levels, codes_per_level
    ("ml-100k", 1682, 512, 3, 256),
    ("ml-1m", 3706, 512, 3, 512),
)


def gaussian_mixture(*, n: int, d: int, components: int, seed: int) -> np.ndarray:
  """float32[n, d]: ``components`` Gaussian blobs (unit-variance means, 0.5-sd noise)."""
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(components, d))
  labels = rng.integers(0, components, size=n)
  return (means[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def sklearn_rq(x: np.ndarray, *, levels: int, codes_per_level: int, seed: int, iterations: int,
               tol: float) -> tuple[float, list[float], list[int]]:
  """Level-by-level RQ with scikit-learn KMeans; returns (error, level errors, iterations)."""
  residual = x.copy()
  errors, iters = [], []
  for level in range(levels):
    km = KMeans(n_clusters=codes_per_level, init="k-means++", n_init=1, max_iter=iterations,
                tol=tol, random_state=seed + level, algorithm="lloyd").fit(residual)
    residual = residual - km.cluster_centers_[km.labels_].astype(np.float32)
    r64 = residual.astype(np.float64)
    errors.append(float(np.mean(np.einsum("ij,ij->i", r64, r64))))
    iters.append(int(km.n_iter_))
  return errors[-1], errors, iters


def write_json_atomically(obj, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", type=Path, default=Path("results/benchmarks/rq_kmeans.json"))
  parser.add_argument("--iterations", type=int, default=50)
  args = parser.parse_args(argv)

  start = time.perf_counter()
  rq.rq_kmeans(np.random.default_rng(0).normal(size=(64, 8)), levels=1, codes_per_level=4,
               seed=0)
  trace_s = time.perf_counter() - start

  rows = []
  for name, n, d, levels, codes in SETTINGS:
    x = gaussian_mixture(n=n, d=d, components=100, seed=args.seed)
    base = float(np.mean(np.sum(x.astype(np.float64) ** 2, axis=1)))
    runs = []
    for label, tol in (("ours (tol=0)", 0.0), ("ours (tol=1e-6)", 1e-6)):
      start = time.perf_counter()
      result = rq.rq_kmeans(x, levels=levels, codes_per_level=codes, seed=args.seed,
                            iterations=args.iterations, tolerance=tol)
      runs.append((label, time.perf_counter() - start, result.reconstruction_error,
                   list(result.level_errors), list(result.level_iterations)))
    start = time.perf_counter()
    err, level_errs, iters = sklearn_rq(x, levels=levels, codes_per_level=codes,
                                        seed=args.seed, iterations=args.iterations, tol=0.0)
    runs.append(("sklearn KMeans (tol=0)", time.perf_counter() - start, err, level_errs,
                 iters))
    for label, wall, err, level_errs, iters in runs:
      rows.append(dict(dataset=name, n=n, d=d, levels=levels, codes_per_level=codes,
                       method=label, wall_s=round(wall, 3), reconstruction_error=err,
                       relative_error=err / base, level_errors=level_errs,
                       level_iterations=iters))

  header = (f"{'data':8} {'n x d':>10} {'L':>2} {'M':>4} {'method':24} {'wall s':>8} "
            f"{'recon err':>10} {'rel err':>8} {'iters/level':>12}")
  print(header)
  print("-" * len(header))
  for r in rows:
    print(f"{r['dataset']:8} {r['n']:>5}x{r['d']:<4} {r['levels']:>2} "
          f"{r['codes_per_level']:>4} "
          f"{r['method']:24} {r['wall_s']:>8.2f} {r['reconstruction_error']:>10.2f} "
          f"{r['relative_error']:>8.4f} {'/'.join(map(str, r['level_iterations'])):>12}")
  print(f"(ours: tf.function tracing, once per process, took {trace_s:.2f} s and is excluded)")

  write_json_atomically(dict(
      seed=args.seed, iterations=args.iterations, trace_s=round(trace_s, 3),
      data="Gaussian mixture: 100 components, N(0, I) means, 0.5-sd isotropic noise",
      faiss="skipped: faiss-cpu 1.15.1 (the only wheel available) fails to import with "
            "numpy 1.25 (ModuleNotFoundError: numpy._core)",
      environment=dict(python=platform.python_version(), numpy=np.__version__,
                       tensorflow=tf.__version__, sklearn=sklearn.__version__,
                       cpus=os.cpu_count(),
                       gpus=[g.name for g in tf.config.list_physical_devices("GPU")]),
      rows=rows), args.output)
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

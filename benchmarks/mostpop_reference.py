"""MostPop reference row on MovieLens-100k u1 (checks the evaluation stage, paper Sec. 6.1.3).

Reference point measured elsewhere on the ML-100k u1 split: MostPop (train counts, train
items masked) scores Recall@10 0.0975, correct NDCG@10 0.325, MRR@10 0.545. This script
recomputes MostPop under a few variants and prints both metric sets (``correct`` =
:mod:`tff_rqfed.evaluation.ranking`, ``paper`` = :mod:`tff_rqfed.evaluation.paper_compat`)
so one can see which variant reproduces the reference.

Data source (``--source``):
  * ``raw``: read RecBole's ``ml-100k.inter`` (u.data row order) directly; the first
    20,000 data rows are u1.test, the rest u1.base; index = original id - 1.
  * ``package``: ``tff_rqfed.data.movielens.load_movielens('ml-100k')`` and
    ``tff_rqfed.data.protocols.make_split(dataset, protocol='paper', seed=0)``.
  * ``auto`` (default): ``package`` if importable, else ``raw``.

Get the raw file with:
  mkdir -p /tmp/ml && cd /tmp/ml && pip download --no-deps -q recbole==1.2.1 && \
  unzip -o -q recbole-1.2.1-py3-none-any.whl 'recbole/dataset_example/ml-100k/*'

Usage: python benchmarks/mostpop_reference.py [--source auto|raw|package] [--inter PATH]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tff_rqfed.evaluation.paper_compat import paper_metrics  # noqa: E402
from tff_rqfed.evaluation.popularity import most_popular_scores  # noqa: E402
from tff_rqfed.evaluation.ranking import ranking_metrics, top_k_from_scores, truth_lists  # noqa: E402

DEFAULT_INTER = "/tmp/ml/recbole/dataset_example/ml-100k/ml-100k.inter"
REFERENCE = {"recall@10": 0.0975, "ndcg@10": 0.325, "mrr@10": 0.545}
K = 10


def load_raw(path: str):
  """(train int32[n,2], test int32[m,2], num_users, num_items) for the u1 split."""
  df = pd.read_csv(path, sep="\t")
  df.columns = [c.split(":")[0] for c in df.columns]
  pairs = np.stack([df["user_id"].to_numpy() - 1, df["item_id"].to_numpy() - 1], axis=1).astype(np.int32)
  test, train = pairs[:20000], pairs[20000:]
  return train, test, 943, 1682


def load_package():
  from tff_rqfed.data.movielens import load_movielens
  from tff_rqfed.data.protocols import make_split

  dataset = load_movielens("ml-100k")
  split = make_split(dataset, protocol="paper", seed=0)
  train = np.concatenate([split.train, split.valid]) if len(split.valid) else split.train
  num_users = int(getattr(dataset, "num_users", max(train[:, 0].max(), split.test[:, 0].max()) + 1))
  num_items = int(getattr(dataset, "num_items", max(train[:, 1].max(), split.test[:, 1].max()) + 1))
  return np.asarray(train), np.asarray(split.test), num_users, num_items


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", choices=["auto", "raw", "package"], default="auto")
  parser.add_argument("--inter", default=DEFAULT_INTER)
  args = parser.parse_args(argv)

  source = args.source
  if source == "auto":
    try:
      import tff_rqfed.data.movielens  # noqa: F401
      import tff_rqfed.data.protocols  # noqa: F401

      source = "package"
    except ImportError:
      source = "raw"
  train, test, num_users, num_items = load_package() if source == "package" else load_raw(args.inter)
  truth = truth_lists(test, num_users=num_users)
  print(
      f"source={source}: {num_users} users, {num_items} items, {len(train)} train / {len(test)} test pairs, "
      f"{sum(len(t) > 0 for t in truth)} test users"
  )

  everything = np.concatenate([train, test])
  variants = {
      "counts(train), train masked": (train, [train]),
      "counts(train), nothing masked": (train, []),
      "counts(train+test), train masked": (everything, [train]),
  }
  header = f"{'variant':36s} {'set':8s} {'recall@10':>9s} {'mrr@10':>8s} {'ndcg@10':>8s}"
  print(header)
  print("-" * len(header))
  for name, (count_pairs, exclude) in variants.items():
    scores = most_popular_scores(count_pairs, num_users=num_users, num_items=num_items)
    top = top_k_from_scores(scores, exclude=exclude, k=K)
    for set_name, metrics in (("correct", ranking_metrics(top, truth, k=K)), ("paper", paper_metrics(top, truth, k=K))):
      print(
          f"{name:36s} {set_name:8s} {metrics['recall@10']:9.4f} {metrics['mrr@10']:8.4f} {metrics['ndcg@10']:8.4f}"
      )
  print(
      f"{'reference (train counts, masked)':36s} {'?':8s} {REFERENCE['recall@10']:9.4f} "
      f"{REFERENCE['mrr@10']:8.4f} {REFERENCE['ndcg@10']:8.4f}"
  )


if __name__ == "__main__":
  main()

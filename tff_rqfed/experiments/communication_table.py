"""Table 4: communication per client per round for the paper's five datasets, from the TFF types.

No data is needed: each method is built for a dataset's item count I (and RQFedRec's M) as in the
paper's Table 1, and its upload and download are counted from the round's TFF types
(`federated.communication`). RQFedRec is built with random stand-in text embeddings (the count does not
depend on them). The paper's "Resource" column is the download (for RQFedRec it says so in
Sec. 6.3.4), so `markdown` puts the paper's number beside our download, and the percentage of
FedMF's beside both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tff_rqfed.algorithms import fedcia, fedmf, fedncf, fedrap, gpfedrec, pfedrec, rqfedrec
from tff_rqfed.federated import client_work as cw

# Table 1 and Table 4 of the paper: items I and RQFedRec's codes per level M (L = 3, d = 512).
DATASETS = {'ml-100k': (1682, 256), 'ml-1m': (3706, 512), 'steam': (5237, 512), 'toys': (16454, 1024),
            'book': (9332, 512)}
PAPER = {'ml-100k': {'FedMF': 861184, 'FedCIA': 2829124, 'RQFedRec': 796524},
         'ml-1m': {'FedMF': 1897472, 'FedCIA': 13734436, 'RQFedRec': 1595100},
         'steam': {'FedMF': 2681344, 'FedCIA': 27426169, 'RQFedRec': 1604286},
         'toys': {'FedMF': 8424448, 'FedCIA': 270734116, 'RQFedRec': 3244452},
         'book': {'FedMF': 4777984, 'FedCIA': 87086224, 'RQFedRec': 1628856}}
NUM_CLIENTS = 100  # GPFedRec's server state holds one table per client; its traffic does not depend on it


def _builders(num_items: int, codes: int, dim: int, levels: int):
  common = dict(num_items=num_items, embedding_dim=dim, training=cw.LocalTraining(), init_scale=0.01,
                seed=0)
  text = np.random.default_rng(0).normal(size=(num_items, 512)).astype(np.float32)
  return {
      'FedMF': lambda: fedmf.build_fedmf(**common),
      'FedNCF': lambda: fedncf.build_fedncf(**common),
      'PFedRec': lambda: pfedrec.build_pfedrec(**common),
      'FedRAP': lambda: fedrap.build_fedrap(**common),
      'GPFedRec': lambda: gpfedrec.build_gpfedrec(num_clients=NUM_CLIENTS, **common),
      'FedCIA': lambda: fedcia.build_fedcia(**common),
      'RQFedRec': lambda: rqfedrec.build_rqfedrec(
          text_embeddings=text, config=rqfedrec.RQConfig(levels=levels, codes_per_level=codes), **common),
  }


def measure(dataset: str, *, num_items: int, codes: int, dim: int = 512, levels: int = 3) -> list[dict]:
  """One record per method: its upload and download values per client per round on `dataset`.

  The paper's number is attached only when the sizes are the paper's (`DATASETS`, d = 512, L = 3).
  """
  papers = (DATASETS.get(dataset) == (num_items, codes) and dim == 512 and levels == 3)
  records = []
  for method, build in _builders(num_items, codes, dim, levels).items():
    communication = build().communication
    records.append({'dataset': dataset, 'method': method, 'num_items': num_items, 'codes': codes,
                    'dim': dim, 'levels': levels, 'upload': communication['upload'],
                    'download': communication['download'],
                    'paper': PAPER[dataset].get(method) if papers else None})
  return records


def markdown(records: pd.DataFrame) -> str:
  """Table 4's layout: per dataset and method, our upload and download, the paper's, % of FedMF."""
  lines = ['### Table 4: values per client per round (from the TFF types)', '',
           '| dataset | method | I | upload | download | paper (resource) | % of FedMF (ours, download) '
           '| % of FedMF (paper) |', '|---|---|---|---|---|---|---|---|']
  for dataset, group in records.groupby('dataset', sort=False):
    fedmf_row = group[group['method'] == 'FedMF'].iloc[0]
    for row in group.itertuples():
      paper = '-' if pd.isna(row.paper) else f'{int(row.paper):,}'
      paper_share = ('-' if pd.isna(row.paper) or pd.isna(fedmf_row['paper'])
                     else f"{100 * row.paper / fedmf_row['paper']:.0f}%")
      lines.append(f'| {dataset} | {row.method} | {row.num_items:,} | {row.upload:,} | {row.download:,} '
                   f"| {paper} | {100 * row.download / fedmf_row['download']:.0f}% | {paper_share} |")
  return '\n'.join(lines) + '\n'

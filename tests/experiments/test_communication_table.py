"""Table 4 counts each method's values per client per round from its TFF types, for any sizes."""

from __future__ import annotations

import pandas as pd
import pytest

from tff_rqfed.experiments import communication_table


@pytest.fixture(scope='module')
def small(tff_context):
  del tff_context
  return {r['method']: r for r in communication_table.measure('ml-100k', num_items=40, codes=4, dim=8,
                                                               levels=2)}


def test_counts_follow_each_methods_payload(small):
  items, dim, codes, levels = 40, 8, 4, 2
  assert (small['FedMF']['upload'], small['FedMF']['download']) == (items * dim, items * dim)
  # FedCIA: the I x I similarity up; down its eigenvectors and eigenvalues (I^2 + I).
  assert small['FedCIA']['upload'] == items ** 2
  assert small['FedCIA']['download'] == items ** 2 + items
  # RQFedRec: two codebooks [2, L, M, d] up; down also the 2L code ids of every item.
  assert small['RQFedRec']['upload'] == 2 * levels * codes * dim
  assert small['RQFedRec']['download'] == 2 * levels * codes * dim + 2 * levels * items
  # GPFedRec sends each client its graph-aggregated table and the mean.
  assert small['GPFedRec']['download'] == 2 * items * dim


def test_paper_numbers_only_beside_the_papers_sizes(small):
  assert all(r['paper'] is None for r in small.values())


def test_markdown_reports_shares_of_fedmf_beside_the_papers():
  records = pd.DataFrame([
      {'dataset': 'ml-100k', 'method': 'FedMF', 'num_items': 1682, 'upload': 861184, 'download': 861184,
       'paper': 861184},
      {'dataset': 'ml-100k', 'method': 'RQFedRec', 'num_items': 1682, 'upload': 786432,
       'download': 796524, 'paper': 796524},
      {'dataset': 'ml-100k', 'method': 'FedNCF', 'num_items': 1682, 'upload': 1755713,
       'download': 1755713, 'paper': None}])
  lines = communication_table.markdown(records).splitlines()
  assert '| ml-100k | RQFedRec | 1,682 | 786,432 | 796,524 | 796,524 | 92% | 92% |' in lines
  assert '| ml-100k | FedNCF | 1,682 | 1,755,713 | 1,755,713 | - | 204% | - |' in lines

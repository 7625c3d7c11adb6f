"""Partitioning users into federated clients (Sec. 6.1: 100 clients; Table 3: one user per client).

Two schemes:

* ``'blocks'``: ``num_clients`` clients of contiguous dense user indices,
  each of ``num_users // num_clients`` users, the remainder going to the last
  client (ML-100k, 943 users: 99 clients of 9 users and one of 52).
* ``'per_user'``: one client per user (``num_clients`` is ignored).

:func:`build_clients` gives each client its training interactions
(``split.train``) as local user positions and global item indices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tff_rqfed.data.protocols import Split

__all__ = ['SCHEMES', 'ClientData', 'partition_users', 'build_clients']

SCHEMES = ('blocks', 'per_user')


def partition_users(num_users: int, *, scheme: str, num_clients: int = 100) -> list[np.ndarray]:
  """Global dense user indices owned by each client.

  Returns:
    A list with one int32[U_k] sorted array per client; together they cover
    ``range(num_users)`` exactly once.

  Raises:
    ValueError: unknown ``scheme``; ``num_users < 1``; for ``'blocks'``,
      ``num_clients < 1`` or ``num_clients > num_users``.
  """
  if scheme not in SCHEMES:
    raise ValueError(f'unknown partition scheme {scheme!r}; valid: {list(SCHEMES)}')
  if num_users < 1:
    raise ValueError(f'num_users must be >= 1, got {num_users!r}')
  all_users = np.arange(num_users, dtype=np.int32)
  if scheme == 'per_user':
    return [all_users[u:u + 1] for u in range(num_users)]
  if not 1 <= num_clients <= num_users:
    raise ValueError(
        f'num_clients must be in [1, num_users={num_users}], got {num_clients!r}')
  size = num_users // num_clients
  bounds = [k * size for k in range(num_clients)] + [num_users]
  return [all_users[bounds[k]:bounds[k + 1]] for k in range(num_clients)]


@dataclasses.dataclass(frozen=True)
class ClientData:
  """One client's training data.

  Attributes:
    user_ids: int32[U_k] global dense user indices owned by this client
      (sorted).
    local_users: int32[n_k] index into ``user_ids`` of each training
      interaction.
    items: int32[n_k] dense item index of each training interaction.
  """

  user_ids: np.ndarray
  local_users: np.ndarray
  items: np.ndarray

  @property
  def num_examples(self) -> int:
    """n_k, the number of training interactions."""
    return int(len(self.items))


def build_clients(split: Split, *, scheme: str, num_clients: int = 100) -> list[ClientData]:
  """Partitions ``split.train`` into per-client :class:`ClientData`.

  Clients are ordered as in :func:`partition_users`; a client whose users
  have no training interactions gets ``num_examples == 0``. Within a client,
  interactions keep their order in ``split.train``.
  """
  groups = partition_users(split.num_users, scheme=scheme, num_clients=num_clients)
  client_of_user = np.empty(split.num_users, dtype=np.int64)
  for k, users in enumerate(groups):
    client_of_user[users] = k
  train_users = split.train[:, 0].astype(np.int64)
  train_items = split.train[:, 1].astype(np.int32)
  owner = client_of_user[train_users]
  order = np.argsort(owner, kind='stable')
  bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(groups)))])
  clients = []
  for k, users in enumerate(groups):
    rows = order[bounds[k]:bounds[k + 1]]
    local = np.searchsorted(users, train_users[rows]).astype(np.int32)
    clients.append(ClientData(user_ids=users, local_users=local, items=train_items[rows]))
  return clients

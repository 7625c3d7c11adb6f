"""Communication per client per round, read from the TFF types that cross the network (Sec. 4.7, Table 4).

`download` counts the values of the SERVER -> CLIENTS broadcast, `upload` the values each client
contributes to the `tff.federated_mean`. Tensors of rank >= 1 are the payload that Table 4 counts
(item tables, codebooks, code ids); scalars (the round's collaborative rate, the client weight |D_k|,
the training loss) are reported apart as `*_scalars`, so the payload numbers compare with the paper.
"""

from __future__ import annotations

import numpy as np
import tensorflow_federated as tff


def count_values(type_spec) -> tuple[int, int]:
  """(values in tensors of rank >= 1, number of scalar tensors) in a TFF type.

  Raises:
    ValueError: if a tensor has an unknown dimension (its size is not fixed by the type).
  """
  tensors, scalars = 0, 0
  for tensor_type in tensor_types(type_spec):
    shape = tensor_type.shape
    if shape is None or any(dim is None for dim in shape):
      raise ValueError(f'Cannot count the values of {tensor_type}: its shape is not fixed.')
    if len(shape) == 0:
      scalars += 1
    else:
      tensors += int(np.prod(shape))
  return tensors, scalars


def tensor_types(type_spec):
  """Yields the `tff.TensorType`s in a (federated, struct or tensor) TFF type, depth first."""
  if isinstance(type_spec, tff.types.FederatedType):
    yield from tensor_types(type_spec.member)
  elif isinstance(type_spec, tff.types.StructType):
    for _, member in tff.structure.iter_elements(type_spec):
      yield from tensor_types(member)
  elif isinstance(type_spec, tff.types.TensorType):
    yield type_spec
  else:
    raise TypeError(f"Unexpected type {type_spec}: expected federated, struct or tensor types.")


def measure(*, broadcast_type, upload_type) -> dict[str, int]:
  """Communication of one client in one round, from the broadcast and upload TFF types."""
  download, download_scalars = count_values(broadcast_type)
  if upload_type is None:
    upload, upload_scalars = 0, 0
  else:
    upload, upload_scalars = count_values(upload_type)
  return {
      'upload': upload,
      'download': download,
      'upload_scalars': upload_scalars,
      'download_scalars': download_scalars,
  }

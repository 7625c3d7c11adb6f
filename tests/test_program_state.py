"""Tests of `tff_rqfed.program_state`: large arrays saved beside TFF's SavedModel, read back exactly."""

import asyncio
import collections
import json

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_rqfed import program_state


def _state(seed: int) -> collections.OrderedDict:
  rng = np.random.default_rng(seed)
  return collections.OrderedDict(
      state=collections.OrderedDict(table=rng.normal(size=(40, 16)).astype(np.float32),
                                    step=np.int64(seed)),
      client_messages=rng.normal(size=(3, 40, 16)).astype(np.float32),
      client_states=[rng.normal(size=(2, 16)).astype(np.float32) for _ in range(3)],
      best_ndcg=np.float64(0.25 + seed), history=json.dumps([{'round': seed}]))


def _manager(root, **kwargs):
  return program_state.ArrayFileProgramStateManager(root, min_bytes=1024, keep_total=2,
                                                    keep_first=False, **kwargs)


def _assert_same(loaded, expected):
  assert list(loaded) == list(expected)
  np.testing.assert_array_equal(loaded['state']['table'], expected['state']['table'])
  assert loaded['state']['step'] == expected['state']['step']
  np.testing.assert_array_equal(loaded['client_messages'], expected['client_messages'])
  assert loaded['client_messages'].dtype == np.float32
  for got, want in zip(loaded['client_states'], expected['client_states'], strict=True):
    np.testing.assert_array_equal(got, want)
  assert loaded['best_ndcg'] == expected['best_ndcg']
  history = loaded['history']
  assert json.loads(history.decode() if isinstance(history, bytes) else history) == [
      {'round': int(expected['state']['step'])}]


def test_large_arrays_are_written_beside_the_saved_model_and_read_back_exactly(tmp_path):
  manager = _manager(tmp_path)
  saved = _state(1)
  asyncio.run(manager.save(saved, 1))
  # table (2,560 bytes) and client_messages (7,680 bytes) are >= 1024 bytes; the client states are not.
  files = {p.name: np.load(p) for p in manager.arrays_dir(1).iterdir()}
  assert sorted(files) == ['0.npy', '1.npy']
  by_shape = {a.shape: a for a in files.values()}
  np.testing.assert_array_equal(by_shape[(3, 40, 16)], saved['client_messages'])
  np.testing.assert_array_equal(by_shape[(40, 16)], saved['state']['table'])
  loaded, version = asyncio.run(manager.load_latest(_state(0)))
  assert version == 1
  _assert_same(loaded, saved)


def test_old_versions_lose_their_arrays_with_their_saved_model(tmp_path):
  manager = _manager(tmp_path)
  for version in (1, 2, 3):
    asyncio.run(manager.save(_state(version), version))
  assert asyncio.run(manager.get_versions()) == [2, 3]
  assert sorted(p.name for p in tmp_path.glob('arrays_*')) == ['arrays_2', 'arrays_3']
  _assert_same(asyncio.run(manager.load(2, _state(0))), _state(2))


def test_arrays_left_by_a_kill_before_the_saved_model_are_replaced_and_never_loaded(tmp_path):
  manager = _manager(tmp_path)
  asyncio.run(manager.save(_state(1), 1))
  orphan = manager.arrays_dir(2)  # a run killed between the arrays' rename and the SavedModel's
  orphan.mkdir()
  np.save(orphan / '0.npy', np.zeros(3))
  (tmp_path / 'arrays_5.tmp').mkdir()
  assert asyncio.run(manager.get_versions()) == [1]
  asyncio.run(manager.save(_state(2), 2))
  _assert_same(asyncio.run(manager.load(2, _state(0))), _state(2))
  assert sorted(p.name for p in tmp_path.glob('arrays_*')) == ['arrays_1', 'arrays_2']


def test_a_state_without_side_arrays_loads_as_with_tffs_own_manager(tmp_path):
  asyncio.run(tff.program.FileProgramStateManager(tmp_path).save(_state(4), 4))
  loaded, version = asyncio.run(_manager(tmp_path).load_latest(_state(0)))
  assert version == 4
  _assert_same(loaded, _state(4))


def test_saving_an_existing_version_is_refused_before_its_arrays_are_touched(tmp_path):
  manager = _manager(tmp_path)
  asyncio.run(manager.save(_state(1), 1))
  with pytest.raises(tff.program.ProgramStateExistsError):
    asyncio.run(manager.save(_state(2), 1))
  _assert_same(asyncio.run(manager.load(1, _state(0))), _state(1))


def test_a_missing_array_file_is_an_error_naming_it(tmp_path):
  manager = _manager(tmp_path)
  asyncio.run(manager.save(_state(1), 1))
  (manager.arrays_dir(1) / '1.npy').unlink()
  with pytest.raises(program_state.MissingArrayError, match=r'arrays_1/1\.npy'):
    asyncio.run(manager.load_latest(_state(0)))


def test_memory_mapped_loading_reads_the_side_arrays_read_only_and_exactly(tmp_path):
  saved = _state(1)
  asyncio.run(_manager(tmp_path).save(saved, 1))
  loaded, _ = asyncio.run(_manager(tmp_path, mmap_mode='r').load_latest(_state(0)))
  _assert_same(loaded, saved)
  assert isinstance(loaded['client_messages'], np.memmap)
  assert not loaded['client_messages'].flags.writeable
  assert not isinstance(loaded['client_states'][0], np.memmap)  # small arrays live in the SavedModel


def test_a_writing_mmap_mode_is_refused(tmp_path):
  with pytest.raises(ValueError, match="mmap_mode must be None, 'r' or 'c'.*got 'r\\+'"):
    program_state.ArrayFileProgramStateManager(tmp_path, mmap_mode='r+')


def test_negative_min_bytes_is_refused(tmp_path):
  with pytest.raises(ValueError, match='min_bytes must be >= 0, got -1'):
    program_state.ArrayFileProgramStateManager(tmp_path, min_bytes=-1)


def test_remove_all_removes_every_version_and_its_arrays(tmp_path):
  manager = _manager(tmp_path)
  for version in (1, 2):
    asyncio.run(manager.save(_state(version), version))
  asyncio.run(manager.remove_all())
  assert asyncio.run(manager.get_versions()) is None
  assert not list(tmp_path.glob('arrays_*'))

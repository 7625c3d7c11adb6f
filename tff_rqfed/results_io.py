"""Atomic writes for results files: a reader never sees half a file, and a crash never loses the last one."""

from __future__ import annotations

import os
import pathlib
import tempfile


def write_atomic(path, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder and `os.replace`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False, suffix='.tmp') as f:
    f.write(text)
    tmp = f.name
  os.replace(tmp, path)

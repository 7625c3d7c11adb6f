"""Atomic writes for results files: a reader never sees half a file, and a crash never loses the last one."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile

# A run's saved program states (`launchers.simulate --resume`), under its output folder.
PROGRAM_STATE_DIR = 'program_state'


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_atomic(path, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder and `os.replace`.

  The file gets the permissions of any file the user creates (0666 less the umask: group-readable
  under the usual 022), not the 0600 of the temporary file it was written as.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)  # a full disk (ENOSPC) shows here or, buffered, when the file closes
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:  # keep the old file and leave no temporary behind
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise

"""The training loop's saved program state: TFF's `FileProgramStateManager`, large arrays beside it.

`tff.program.FileProgramStateManager` writes each version as a SavedModel and first wraps every leaf
in a `tf.Variable`, so each saved array is copied into a tensor, and TensorFlow's writer keeps about
one more copy after the first save; loading makes two more (the variable, then its NumPy value).
That is harmless for a model's weights and decisive for the largest state we carry: GPFedRec's
per-client targets with one user per client are float32[943, 1682, 512], 3.2 GB on ML-100k, and the
copies ran the launcher out of memory at a checkpoint of Table 3's run (docs/RESULTS.md).

`ArrayFileProgramStateManager` is a `tff.program.FileProgramStateManager` that writes every NumPy
array of at least `min_bytes` with `np.save` (straight from the array's buffer, read back into one
array) into `arrays_<version>/` beside the version's SavedModel, and saves a short marker in its
place. Everything else is TFF's: the versions, keeping the last few, the SavedModel of the rest
and its atomic rename. The arrays are written to a temporary folder and renamed before the
SavedModel is, so a version that exists has its arrays; a folder of arrays left by a kill between
the two renames is removed at the next save. A state saved without side arrays (by an earlier
version of tff-rqfed) loads as before.

Written by hand because neither TFF nor TensorFlow saves a NumPy array without first copying it
into a tensor; the subclass keeps TFF's program-state API (`save`, `load`, `load_latest`, versions).
"""

import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

ARRAYS_PREFIX = 'arrays_'
MARKER = b'tff_rqfed.program_state.array:'  # + the array's index in its version's folder
DEFAULT_MIN_BYTES = 1 << 20


class MissingArrayError(FileNotFoundError):
  """A saved version whose SavedModel names an array file that is not there."""


class ArrayFileProgramStateManager(tff.program.FileProgramStateManager):
  """A `tff.program.FileProgramStateManager` that saves NumPy arrays of `min_bytes` or more as
  `.npy` files beside each version (see the module docstring); other arguments as TFF's.

  `mmap_mode` ('r' for read-only) loads the side arrays memory-mapped (`np.load`'s `mmap_mode`): a
  reader that looks at one client's table at a time then never holds them all in memory.
  """

  def __init__(self, root_dir: str | os.PathLike, *, min_bytes: int | None = None,
               mmap_mode: str | None = None, **kwargs):
    if min_bytes is None:
      min_bytes = DEFAULT_MIN_BYTES
    if min_bytes < 0:
      raise ValueError(f'min_bytes must be >= 0, got {min_bytes!r}')
    if mmap_mode not in (None, 'r', 'c'):
      raise ValueError(f"mmap_mode must be None, 'r' or 'c' (loading never writes), got {mmap_mode!r}")
    super().__init__(root_dir, **kwargs)
    self._min_bytes = min_bytes
    self._mmap_mode = mmap_mode

  def arrays_dir(self, version: int) -> pathlib.Path:
    """Where version `version`'s side arrays are: `<root_dir>/arrays_<version>/<index>.npy`."""
    return pathlib.Path(self._root_dir) / f'{ARRAYS_PREFIX}{version}'

  def _is_large(self, value) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype != object
            and value.nbytes >= self._min_bytes)

  async def save(self, program_state, version: int) -> None:
    """Saves `program_state` as version `version`: its large arrays to `arrays_dir(version)` first,
    then the rest, with markers in their place, through TFF's `FileProgramStateManager.save` (which
    also removes the versions it no longer keeps; their arrays go with the orphans after it)."""
    if tf.io.gfile.exists(self._get_path_for_version(version)):  # TFF checks too, after our arrays
      raise tff.program.ProgramStateExistsError(version=version, path=self._root_dir)
    arrays = []

    def set_aside(value):
      if not self._is_large(value):
        return value
      arrays.append(value)
      return MARKER + str(len(arrays) - 1).encode()

    placeholders = tf.nest.map_structure(set_aside, program_state)
    if arrays:
      self._write_arrays(arrays, version)
    await super().save(placeholders, version)
    self._remove_orphan_arrays(await self.get_versions() or [])

  def _write_arrays(self, arrays: list[np.ndarray], version: int) -> None:
    final = self.arrays_dir(version)
    temporary = final.with_name(final.name + '.tmp')
    for stale in (temporary, final):  # left by a run killed before its SavedModel was renamed
      shutil.rmtree(stale, ignore_errors=True)
    temporary.mkdir(parents=True)
    for index, array in enumerate(arrays):
      with open(temporary / f'{index}.npy', 'wb') as f:
        np.save(f, array, allow_pickle=False)
    temporary.rename(final)

  def _remove_orphan_arrays(self, versions: list[int]) -> None:
    """Removes the array folders of versions that no longer exist: TFF removed them, or a kill
    came between the arrays' rename and the SavedModel's (the one place arrays are removed)."""
    kept = {self.arrays_dir(v).name for v in versions}
    for path in pathlib.Path(self._root_dir).glob(f'{ARRAYS_PREFIX}*'):
      if path.name not in kept:
        shutil.rmtree(path, ignore_errors=True)

  async def load(self, version: int, structure):
    """Version `version` of the program state, its side arrays read back in place of the markers."""
    saved = await super().load(version, structure)
    folder = self.arrays_dir(version)

    def restore(value):
      if not (isinstance(value, bytes) and value.startswith(MARKER)):
        return value
      path = folder / f'{value[len(MARKER):].decode()}.npy'
      if not path.exists():
        raise MissingArrayError(f'{path}: array file of saved program state version {version} '
                                'is missing; pass --overwrite to start the run again')
      return np.load(path, allow_pickle=False, mmap_mode=self._mmap_mode)

    return tf.nest.map_structure(restore, saved)

  async def remove_all(self) -> None:
    await super().remove_all()
    self._remove_orphan_arrays([])

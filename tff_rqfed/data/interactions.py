"""Interaction-file loading and dense indexing (Sec. 6.1, datasets).

Implements :func:`load_interactions`, which reads a delimited user-item
interaction file (RecBole "atomic" ``.inter`` files included) and, optionally,
an item file (``.item``), and returns a :class:`Dataset` holding dense
``int32`` user/item indices in file row order.

Conventions (the evaluation metrics depend on them):

* Users are indexed in *natural* sort order of their id strings
  (``"2" < "10"``, ``"1m_2" < "1m_10"``).
* Items are indexed in the row order of the item file, restricted to items
  that occur in the interactions, when an item file is given; otherwise in
  natural sort order of their id strings.

For MovieLens-100k both rules give ``index = original id - 1``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import pathlib
import re

import numpy as np
import pandas as pd

__all__ = ['DataError', 'Dataset', 'load_interactions', 'natural_sort_key']

# RecBole atomic-file field types, stripped from header names ("user_id:token").
_RECBOLE_TYPE_SUFFIX = re.compile(r':(token|token_seq|float|float_seq)$')
_DIGITS = re.compile(r'(\d+)')


class DataError(ValueError):
  """A data file is missing, malformed, or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Implicit-feedback interactions with dense user/item indices.

  Attributes:
    name: dataset name (``'ml-100k'``, ...).
    users: int32[n] dense user index per interaction, in file row order.
    items: int32[n] dense item index per interaction.
    ratings: float32[n] explicit rating per interaction, or None.
    timestamps: int64[n] timestamp per interaction, or None.
    user_ids: object[num_users] original user id (str) of each dense user
      index.
    item_ids: object[num_items] original item id (str) of each dense item
      index.
    item_features: one row per dense item index (row i = item i), the
      columns of the item file minus the id column (all str), or None when
      no item file was given.
  """

  name: str
  users: np.ndarray
  items: np.ndarray
  ratings: np.ndarray | None
  timestamps: np.ndarray | None
  user_ids: np.ndarray
  item_ids: np.ndarray
  item_features: pd.DataFrame | None = None

  @property
  def num_users(self) -> int:
    return int(len(self.user_ids))

  @property
  def num_items(self) -> int:
    return int(len(self.item_ids))

  @property
  def num_interactions(self) -> int:
    return int(len(self.users))


def natural_sort_key(s: str) -> tuple:
  """Sort key ordering digit runs numerically: ``"1m_2" < "1m_10"``."""
  parts = _DIGITS.split(s)
  # re.split with a capture group alternates (str, digits, str, ...), so the
  # types at each tuple position agree between any two keys.
  chunks = tuple(int(p) if i % 2 else p for i, p in enumerate(parts))
  return (chunks, s)


def _natural_sorted(values) -> np.ndarray:
  return np.array(sorted(values, key=natural_sort_key), dtype=object)


@dataclasses.dataclass(frozen=True)
class _Table:
  """A parsed delimited file: str columns plus the 1-based file line of each row."""

  path: pathlib.Path
  frame: pd.DataFrame   # all columns dtype object (str)
  lines: np.ndarray     # int64[n_rows] 1-based line number of each data row
  header_line: int


def _strip_type(column: str) -> str:
  return _RECBOLE_TYPE_SUFFIX.sub('', column.strip())


def _read_table(path: pathlib.Path, sep: str | None,
                numeric_columns: tuple[str, ...] = ()) -> _Table:
  """Reads a delimited text file with a header.

  Fields are kept as str except ``numeric_columns``, which pandas may parse
  as numbers (validated later by :func:`_numeric`). Line structure (blank
  lines, field counts) is checked with numpy over the raw bytes so that
  errors can name the 1-based line.
  """
  if not path.is_file():
    raise DataError(f'{path}: file not found')
  data = path.read_bytes()
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  data = data.replace(b'\r\n', b'\n')
  buf = np.frombuffer(data, np.uint8)
  newlines = np.flatnonzero(buf == ord('\n'))
  starts = np.concatenate([[0], newlines + 1])
  ends = np.concatenate([newlines, [len(buf)]])
  nonblank = np.flatnonzero(ends > starts)

  def line(i: int) -> str:
    raw = data[starts[i]:ends[i]]
    try:
      return raw.decode('utf-8')
    except UnicodeDecodeError:
      return raw.decode('latin-1')

  if len(nonblank) == 0:
    raise DataError(f'{path}: file is empty (expected a header line)')
  header_idx = int(nonblank[0])
  header = line(header_idx)
  if sep is None:
    sep = '\t' if '\t' in header else (',' if ',' in header else '\t')
  if len(sep) != 1:
    raise ValueError(f'sep must be a single character, got {sep!r}')
  columns = [_strip_type(c) for c in header.split(sep)]
  data_idx = nonblank[1:]
  if len(data_idx) == 0:
    raise DataError(
        f'{path}, line {header_idx + 1}: header only, no data rows (header {header!r})')
  seps = np.concatenate([[0], np.cumsum(buf == ord(sep))])
  counts = seps[ends[data_idx]] - seps[starts[data_idx]]
  bad = np.flatnonzero(counts != len(columns) - 1)
  if len(bad):
    i = int(data_idx[bad[0]])
    raise DataError(
        f'{path}, line {i + 1}: expected {len(columns)} fields {columns}, '
        f'found {counts[bad[0]] + 1}: {line(i)!r}')
  dtype = {c: str for c in columns if c not in numeric_columns}
  kwargs = dict(sep=sep, header=0, names=columns, dtype=dtype, quoting=csv.QUOTE_NONE,
                na_filter=False, skip_blank_lines=True, engine='c')
  try:
    frame = pd.read_csv(io.BytesIO(data), encoding='utf-8', **kwargs)
  except UnicodeDecodeError:
    frame = pd.read_csv(io.BytesIO(data), encoding='latin-1', **kwargs)
  assert len(frame) == len(data_idx), (len(frame), len(data_idx))
  return _Table(path=path, frame=frame, lines=data_idx + 1, header_line=header_idx + 1)


def _require(table: _Table, column: str, what: str) -> None:
  if column not in table.frame.columns:
    raise DataError(
        f'{table.path}, line {table.header_line}: missing required {what} column '
        f'{column!r}; columns found: {list(table.frame.columns)}')


def _numeric(table: _Table, column: str) -> np.ndarray:
  """float64[n] values of a numeric column; DataError quotes the first bad field."""
  values = table.frame[column]
  if pd.api.types.is_numeric_dtype(values.dtype):
    parsed = values.to_numpy(dtype=np.float64)
  else:
    parsed = pd.to_numeric(values, errors='coerce').to_numpy(dtype=np.float64)
  bad = np.flatnonzero(~np.isfinite(parsed))
  if len(bad):
    j = int(bad[0])
    raise DataError(
        f'{table.path}, line {table.lines[j]}: non-numeric {column!r} value '
        f'{str(values.iloc[j])!r}')
  return parsed


def _read_item_file(item_path: pathlib.Path, sep: str | None, item_column: str,
                    interactions: _Table) -> _Table:
  """Reads the item file and checks it against the interaction table.

  Raises:
    DataError: for a missing ``item_column``, a duplicate item id (naming the
      item file's line) or an interaction whose item the file lacks (naming the
      interaction file's line).
  """
  item_table = _read_table(item_path, sep)
  _require(item_table, item_column, 'item')
  ids = item_table.frame[item_column]
  dup = ids.duplicated(keep='first').to_numpy()
  if dup.any():
    j = int(np.flatnonzero(dup)[0])
    raise DataError(
        f'{item_table.path}, line {item_table.lines[j]}: duplicate item id {ids.iloc[j]!r}')
  interaction_items = interactions.frame[item_column]
  unknown = ~interaction_items.isin(ids).to_numpy()
  if unknown.any():
    j = int(np.flatnonzero(unknown)[0])
    raise DataError(
        f'{interactions.path}, line {interactions.lines[j]}: item '
        f'{interaction_items.iloc[j]!r} is not in the item file {item_table.path}')
  return item_table


def load_interactions(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    item_path: str | os.PathLike | None = None,
    user_column: str = 'user_id',
    item_column: str = 'item_id',
    rating_column: str = 'rating',
    timestamp_column: str = 'timestamp',
    rating_threshold: float | None = None,
    sep: str | None = None,
) -> Dataset:
  """Loads an interaction file (and optional item file) into a :class:`Dataset`.

  Files are delimited text with a header line; ``sep`` is auto-detected
  from the header (tab if it has one, else comma) when None. RecBole type
  suffixes (``user_id:token``) are stripped from column names, CRLF line
  endings and blank lines are accepted, and fields are never unquoted.

  Every kept row is a positive (implicit feedback). Processing order:

  1. Exact duplicate (user, item) pairs: the first occurrence in file order
     is kept, later ones are dropped (with their ratings/timestamps).
  2. ``rating_threshold``, if given, keeps rows with rating >= threshold.
  3. Dense indexing of the users/items that remain (module docstring).

  Args:
    path: the interaction file.
    name: dataset name; defaults to the file name without its suffix.
    item_path: optional item file whose ``item_column`` lists every item id
      once; it fixes the item order and supplies ``item_features``.
    user_column / item_column: required columns.
    rating_column / timestamp_column: optional columns (None in the result
      when absent); the rating column is required if ``rating_threshold``
      is given.
    rating_threshold: minimum rating of a kept row.
    sep: field delimiter, or None to auto-detect.

  Raises:
    DataError: naming the file and the 1-based line, for a missing or empty
      file, a missing column, a row with the wrong number of fields, a
      non-numeric rating/timestamp, an interaction whose item is not in the
      item file, or a duplicate id in the item file.
  """
  path = pathlib.Path(path)
  table = _read_table(path, sep, numeric_columns=(rating_column, timestamp_column))
  _require(table, user_column, 'user')
  _require(table, item_column, 'item')
  if rating_threshold is not None:
    _require(table, rating_column, 'rating')
  frame = table.frame
  ratings = _numeric(table, rating_column) if rating_column in frame.columns else None
  timestamps = (_numeric(table, timestamp_column)
                if timestamp_column in frame.columns else None)

  item_table = None
  if item_path is not None:
    item_table = _read_item_file(pathlib.Path(item_path), sep, item_column, table)

  keep = ~frame.duplicated(subset=[user_column, item_column], keep='first').to_numpy()
  if rating_threshold is not None:
    keep &= ratings >= rating_threshold
  user_raw = frame[user_column].to_numpy(dtype=object)[keep]
  item_raw = frame[item_column].to_numpy(dtype=object)[keep]

  user_ids = _natural_sorted(pd.unique(user_raw))
  item_features = None
  if item_table is not None:
    in_use = item_table.frame[item_column].isin(pd.unique(item_raw)).to_numpy()
    item_frame = item_table.frame[in_use].reset_index(drop=True)
    item_ids = item_frame[item_column].to_numpy(dtype=object)
    item_features = item_frame.drop(columns=[item_column])
  else:
    item_ids = _natural_sorted(pd.unique(item_raw))

  users = pd.Categorical(user_raw, categories=user_ids).codes.astype(np.int32)
  items = pd.Categorical(item_raw, categories=item_ids).codes.astype(np.int32)
  return Dataset(
      name=name if name is not None else path.stem,
      users=users,
      items=items,
      ratings=None if ratings is None else ratings[keep].astype(np.float32),
      timestamps=None if timestamps is None else timestamps[keep].astype(np.int64),
      user_ids=user_ids,
      item_ids=item_ids,
      item_features=item_features,
  )

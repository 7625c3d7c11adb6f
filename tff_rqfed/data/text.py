"""Item text descriptions, the input of the semantic channel (Sec. 4.3.1).

:func:`item_texts` renders one short text per dense item index from the
dataset's item features:

* MovieLens item files (a ``movie_title`` column): ``"Toy Story (1995).
  Genres: Animation, Children's, Comedy."``. The year comes from
  ``release_year`` and is omitted when empty or not a number (ML-100k item
  267 has year ``"unkonwn"``); genres are the space-separated tokens of
  ``class`` (ML-100k) or ``genre`` (ML-1M), so ``"Children's"`` and
  ``"Sci-Fi"`` stay single genres.
* Other item files: the ``text`` column if present, else every non-empty
  feature column joined with ``". "``.
* Items with no usable feature text, and every item of a dataset without
  item features (``item_features is None``), fall back to their original
  item id string.
"""

from __future__ import annotations

import pandas as pd

from tff_rqfed.data.interactions import Dataset

__all__ = ['item_texts']

_GENRE_COLUMNS = ('class', 'genre')


def _format_year(value: str) -> str:
  """'1995' or '1995.0' -> '1995'; '' or non-numeric -> ''."""
  value = value.strip()
  try:
    year = float(value)
  except ValueError:
    return ''
  return str(int(year)) if year.is_integer() else value


def _movielens_texts(features: pd.DataFrame) -> list[str]:
  titles = features['movie_title'].astype(str).str.strip()
  years = (features['release_year'].astype(str).map(_format_year)
           if 'release_year' in features.columns else pd.Series('', index=features.index))
  genre_col = next((c for c in _GENRE_COLUMNS if c in features.columns), None)
  genres = (features[genre_col].astype(str).str.split()
            if genre_col is not None else pd.Series([[]] * len(features), index=features.index))
  texts = []
  for title, year, genre in zip(titles, years, genres):
    head = f'{title} ({year})' if year else title
    texts.append(f'{head}. Genres: {", ".join(genre)}.' if genre else f'{head}.')
  return texts


def item_texts(dataset: Dataset) -> list[str]:
  """One text per dense item index (``len == dataset.num_items``); see module docstring."""
  ids = [str(i) for i in dataset.item_ids]
  features = dataset.item_features
  if features is None:
    return ids
  features = features.fillna('').astype(str)
  if 'movie_title' in features.columns:
    texts = _movielens_texts(features)
    return [t if features['movie_title'].iloc[i].strip() else ids[i]
            for i, t in enumerate(texts)]
  if 'text' in features.columns:
    texts = features['text'].str.strip().tolist()
  else:
    stripped = features.apply(lambda col: col.str.strip())
    texts = ['. '.join(v for v in row if v) for row in stripped.itertuples(index=False)]
  return [t if t else ids[i] for i, t in enumerate(texts)]

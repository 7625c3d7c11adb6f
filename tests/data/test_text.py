"""Tests for tff_rqfed.data.text (Sec. 4.3.1 semantic channel input)."""

import numpy as np
import pandas as pd

from tff_rqfed.data.interactions import Dataset
from tff_rqfed.data.text import item_texts


def dataset(features, item_ids=None):
  n = len(features) if features is not None else len(item_ids)
  item_ids = item_ids if item_ids is not None else [f'i{k}' for k in range(n)]
  return Dataset(name='toy', users=np.zeros(n, np.int32), items=np.arange(n, dtype=np.int32),
                 ratings=None, timestamps=None, user_ids=np.array(['u'], object),
                 item_ids=np.array(item_ids, object), item_features=features)


def test_movielens_100k_class_column_is_rendered_with_year_and_genres():
  feats = pd.DataFrame({'movie_title': ['Toy Story', 'Unknown Film'],
                        'release_year': ['1995', ''],
                        'class': ["Animation Children's Comedy", 'Sci-Fi']})
  assert item_texts(dataset(feats)) == [
      "Toy Story (1995). Genres: Animation, Children's, Comedy.",
      'Unknown Film. Genres: Sci-Fi.']


def test_movielens_1m_genre_column_and_float_year():
  feats = pd.DataFrame({'movie_title': ['Jumanji'], 'release_year': ['1995.0'],
                        'genre': ["Adventure Children's Fantasy"]})
  assert item_texts(dataset(feats)) == ["Jumanji (1995). Genres: Adventure, Children's, Fantasy."]


def test_movielens_without_genres_or_title_falls_back():
  feats = pd.DataFrame({'movie_title': ['Heat', ''], 'release_year': ['1995', '1990'],
                        'class': ['', 'Drama']})
  assert item_texts(dataset(feats)) == ['Heat (1995).', 'i1']


def test_generic_text_column_is_used_when_present():
  feats = pd.DataFrame({'text': ['a red shoe', ''], 'brand': ['Acme', 'Acme']})
  assert item_texts(dataset(feats)) == ['a red shoe', 'i1']


def test_generic_features_are_joined_skipping_empty_ones():
  feats = pd.DataFrame({'name': ['Shoe', '', ''], 'brand': ['', 'Acme', ''],
                        'color': ['red', 'blue', '']})
  assert item_texts(dataset(feats)) == ['Shoe. red', 'Acme. blue', 'i2']


def test_dataset_without_item_features_falls_back_to_item_ids():
  assert item_texts(dataset(None, item_ids=['10', '20'])) == ['10', '20']


def test_ml100k_item_texts_one_per_item(cached_movielens):
  ds = cached_movielens('ml-100k')
  texts = item_texts(ds)
  assert len(texts) == ds.num_items == 1682
  assert texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
  assert texts[266] == 'unkonwn. Genres: unknown.'   # item 267: year "unkonwn" omitted

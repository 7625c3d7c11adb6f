"""Tests for tff_rqfed.data.interactions (Sec. 6.1 dataset loading)."""

import numpy as np
import pytest

from tff_rqfed.data.interactions import DataError, load_interactions, natural_sort_key


def write(tmp_path, name, text, newline='\n'):
  path = tmp_path / name
  path.write_bytes(text.replace('\n', newline).encode())
  return path


def test_recbole_type_suffixes_are_stripped_from_header(tmp_path):
  path = write(tmp_path, 'x.inter',
               'user_id:token\titem_id:token\trating:float\ttimestamp:float\n'
               '1\t10\t4\t100\n2\t20\t3\t200\n')
  ds = load_interactions(path)
  np.testing.assert_array_equal(ds.ratings, np.array([4, 3], np.float32))
  np.testing.assert_array_equal(ds.timestamps, np.array([100, 200], np.int64))
  assert ds.ratings.dtype == np.float32 and ds.timestamps.dtype == np.int64
  assert ds.users.dtype == np.int32 and ds.items.dtype == np.int32


def test_crlf_line_endings_give_the_same_dataset_as_lf(tmp_path):
  text = 'user_id\titem_id\trating\n1\ta\t5\n2\tb\t1\n'
  lf = load_interactions(write(tmp_path, 'lf.inter', text))
  crlf = load_interactions(write(tmp_path, 'crlf.inter', text, newline='\r\n'))
  np.testing.assert_array_equal(lf.users, crlf.users)
  np.testing.assert_array_equal(lf.items, crlf.items)
  assert list(crlf.item_ids) == ['a', 'b']


def test_comma_separator_is_auto_detected(tmp_path):
  ds = load_interactions(write(tmp_path, 'x.csv', 'user_id,item_id\n1,2\n3,4\n'))
  assert list(ds.user_ids) == ['1', '3'] and list(ds.item_ids) == ['2', '4']


def test_rating_and_timestamp_columns_are_optional(tmp_path):
  ds = load_interactions(write(tmp_path, 'x.inter', 'user_id\titem_id\n1\t2\n'))
  assert ds.ratings is None and ds.timestamps is None


def test_custom_column_names(tmp_path):
  path = write(tmp_path, 'x.inter', 'u\ti\tr\n1\t2\t5\n')
  ds = load_interactions(path, user_column='u', item_column='i', rating_column='r')
  assert ds.ratings.tolist() == [5.0]


def test_default_name_is_file_stem_and_name_overrides(tmp_path):
  path = write(tmp_path, 'ml-100k.inter', 'user_id\titem_id\n1\t2\n')
  assert load_interactions(path).name == 'ml-100k'
  assert load_interactions(path, name='other').name == 'other'


def test_users_are_indexed_in_natural_sort_order(tmp_path):
  path = write(tmp_path, 'x.inter',
               'user_id\titem_id\n1m_10\ta\n1m_2\ta\n1m_1\tb\n')
  ds = load_interactions(path)
  assert list(ds.user_ids) == ['1m_1', '1m_2', '1m_10']
  assert ds.users.tolist() == [2, 1, 0]


def test_items_without_item_file_are_indexed_in_natural_sort_order(tmp_path):
  path = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\t10\n1\t2\n1\t1\n')
  ds = load_interactions(path)
  assert list(ds.item_ids) == ['1', '2', '10']
  assert ds.items.tolist() == [2, 1, 0]
  assert ds.item_features is None


def test_natural_sort_key_orders_digit_runs_numerically():
  assert sorted(['10', '2', '1'], key=natural_sort_key) == ['1', '2', '10']
  assert sorted(['b', 'a10', 'a9', '7'], key=natural_sort_key) == ['7', 'a9', 'a10', 'b']


def test_items_follow_item_file_order_restricted_to_used_items(tmp_path):
  inter = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\tz\n1\ta\n2\tm\n')
  item = write(tmp_path, 'x.item',
               'item_id:token\ttitle:token_seq\tyear:token\n'
               'm\tMiddle\t1990\nunused\tNever rated\t\nz\tZed\t\na\tAy\t2001\n')
  ds = load_interactions(inter, item_path=item)
  assert list(ds.item_ids) == ['m', 'z', 'a']
  assert ds.items.tolist() == [1, 2, 0]
  assert list(ds.item_features.columns) == ['title', 'year']
  assert ds.item_features['title'].tolist() == ['Middle', 'Zed', 'Ay']
  assert ds.item_features['year'].tolist() == ['1990', '', '2001']  # empty allowed


def test_rating_threshold_keeps_rows_at_or_above_it(tmp_path):
  path = write(tmp_path, 'x.inter',
               'user_id\titem_id\trating\n1\ta\t5\n1\tb\t3\n2\tc\t4\n3\ta\t1\n')
  ds = load_interactions(path, rating_threshold=4)
  assert ds.ratings.tolist() == [5.0, 4.0]
  assert list(ds.user_ids) == ['1', '2']       # user 3 had no kept rows
  assert list(ds.item_ids) == ['a', 'c']


def test_duplicate_user_item_pairs_keep_the_first_occurrence(tmp_path):
  path = write(tmp_path, 'x.inter',
               'user_id\titem_id\trating\ttimestamp\n1\ta\t2\t10\n2\ta\t3\t20\n1\ta\t5\t30\n')
  ds = load_interactions(path)
  assert ds.num_interactions == 2
  assert ds.ratings.tolist() == [2.0, 3.0]
  assert ds.timestamps.tolist() == [10, 20]


def test_blank_lines_are_skipped_and_line_numbers_still_count_them(tmp_path):
  path = write(tmp_path, 'x.inter', 'user_id\titem_id\trating\n\n1\ta\t5\n\n2\tb\tbad\n')
  with pytest.raises(DataError, match=r'line 5: .*\'bad\''):
    load_interactions(path)


def test_missing_file_raises_naming_the_file(tmp_path):
  path = tmp_path / 'nope.inter'
  with pytest.raises(DataError, match='nope.inter.*not found'):
    load_interactions(path)


def test_empty_file_raises(tmp_path):
  path = write(tmp_path, 'empty.inter', '')
  with pytest.raises(DataError, match='empty.inter.*empty'):
    load_interactions(path)


def test_header_only_file_raises_naming_line_1(tmp_path):
  path = write(tmp_path, 'head.inter', 'user_id\titem_id\n')
  with pytest.raises(DataError, match=r'head.inter, line 1: header only'):
    load_interactions(path)


def test_missing_required_column_names_column_and_lists_found_columns(tmp_path):
  path = write(tmp_path, 'cols.inter', 'user_id:token\tmovie:token\n1\t2\n')
  with pytest.raises(DataError) as err:
    load_interactions(path)
  msg = str(err.value)
  assert 'cols.inter, line 1' in msg and "'item_id'" in msg and "['user_id', 'movie']" in msg


def test_threshold_without_rating_column_raises(tmp_path):
  path = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\t2\n')
  with pytest.raises(DataError, match="'rating'"):
    load_interactions(path, rating_threshold=4)


@pytest.mark.parametrize('row', ['1\ta\t5\textra', '1\ta'])
def test_row_with_wrong_field_count_raises_with_line_and_value(tmp_path, row):
  path = write(tmp_path, 'fields.inter', f'user_id\titem_id\trating\n1\tb\t4\n{row}\n',
               newline='\r\n')
  with pytest.raises(DataError) as err:
    load_interactions(path)
  msg = str(err.value)
  assert 'fields.inter, line 3' in msg and repr(row) in msg


@pytest.mark.parametrize('column,header', [('rating', 'user_id\titem_id\trating\n'),
                                           ('timestamp', 'user_id\titem_id\ttimestamp\n')])
def test_non_numeric_rating_or_timestamp_raises_with_line_and_value(tmp_path, column, header):
  path = write(tmp_path, 'num.inter', header + '1\ta\t4\n2\tb\tfive\n')
  with pytest.raises(DataError) as err:
    load_interactions(path)
  msg = str(err.value)
  assert 'num.inter, line 3' in msg and f"'{column}'" in msg and "'five'" in msg


def test_empty_rating_field_raises(tmp_path):
  path = write(tmp_path, 'num.inter', 'user_id\titem_id\trating\n1\ta\t\n')
  with pytest.raises(DataError, match=r"num.inter, line 2: non-numeric 'rating' value ''"):
    load_interactions(path)


def test_item_missing_from_item_file_raises_with_line(tmp_path):
  inter = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\ta\n1\tghost\n')
  item = write(tmp_path, 'x.item', 'item_id\ttitle\na\tAy\n')
  with pytest.raises(DataError) as err:
    load_interactions(inter, item_path=item)
  msg = str(err.value)
  assert 'x.inter, line 3' in msg and "'ghost'" in msg and 'x.item' in msg


def test_duplicate_id_in_item_file_raises_with_line(tmp_path):
  inter = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\ta\n')
  item = write(tmp_path, 'x.item', 'item_id\ttitle\na\tAy\nb\tBee\na\tAgain\n')
  with pytest.raises(DataError, match=r"x.item, line 4: duplicate item id 'a'"):
    load_interactions(inter, item_path=item)


def test_item_file_missing_id_column_raises(tmp_path):
  inter = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\ta\n')
  item = write(tmp_path, 'x.item', 'id\ttitle\na\tAy\n')
  with pytest.raises(DataError, match=r"x.item, line 1: .*'item_id'.*\['id', 'title'\]"):
    load_interactions(inter, item_path=item)


def test_quotes_in_fields_are_kept_verbatim(tmp_path):
  path = write(tmp_path, 'x.inter', 'user_id\titem_id\n1\t"Quoted, Title" (1990)\n')
  ds = load_interactions(path)
  assert list(ds.item_ids) == ['"Quoted, Title" (1990)']

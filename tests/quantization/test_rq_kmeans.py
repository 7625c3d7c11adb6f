"""Tests for tff_rqfed.quantization.rq_kmeans (RQ-kmeans, paper Sec. 3.3, Eq. 2)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import adjusted_rand_score

from tff_rqfed.quantization import rq_kmeans as rq


def _blobs(*, num_blobs=8, per_blob=40, dim=16, spread=0.05, seed=0):
  """float32[num_blobs * per_blob, dim] well-separated blobs and their labels."""
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(num_blobs, dim)) * 10.0
  labels = np.repeat(np.arange(num_blobs), per_blob)
  x = means[labels] + spread * rng.normal(size=(labels.size, dim))
  return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def random_data():
  return np.random.default_rng(1).normal(size=(300, 12)).astype(np.float32)


def test_recovers_planted_blobs_up_to_permutation():
  x, labels = _blobs()
  result = rq.rq_kmeans(x, levels=1, codes_per_level=8, seed=3)
  assert result.codes.shape == (x.shape[0], 1)
  assert result.codes.dtype == np.int32
  assert adjusted_rand_score(labels, result.codes[:, 0]) == pytest.approx(1.0)
  # Contingency: each blob maps to exactly one code, and the codes differ.
  blob_to_code = {int(b): set(result.codes[labels == b, 0].tolist()) for b in range(8)}
  assert all(len(codes) == 1 for codes in blob_to_code.values())
  assert len({codes.pop() for codes in blob_to_code.values()}) == 8


def test_result_shapes_and_dtypes(random_data):
  result = rq.rq_kmeans(random_data, levels=2, codes_per_level=5, seed=0)
  assert result.codes.shape == (300, 2) and result.codes.dtype == np.int32
  assert result.centres.shape == (2, 5, 12) and result.centres.dtype == np.float32
  assert result.codes.min() >= 0 and result.codes.max() < 5
  assert len(result.level_errors) == 2 and len(result.level_iterations) == 2
  assert all(1 <= it <= 50 for it in result.level_iterations)


def test_reconstruction_error_falls_with_levels(random_data):
  results = [rq.rq_kmeans(random_data, levels=levels, codes_per_level=16, seed=0)
             for levels in (1, 2, 3)]
  errors = [r.reconstruction_error for r in results]
  assert errors[0] > errors[1] > errors[2]
  assert errors[0] < np.mean(np.sum(random_data.astype(np.float64) ** 2, axis=1))
  # Level l does not depend on L: the same seed gives the same prefix.
  np.testing.assert_array_equal(results[2].codes[:, :1], results[0].codes)
  assert results[2].level_errors[:2] == results[1].level_errors


def test_level_errors_non_increasing_and_match_reconstruct(random_data):
  result = rq.rq_kmeans(random_data, levels=4, codes_per_level=8, seed=5)
  errors = np.asarray(result.level_errors)
  assert np.all(np.diff(errors) <= 1e-9)
  assert result.reconstruction_error == errors[-1]
  recon = rq.reconstruct(result.codes, result.centres)
  assert recon.shape == random_data.shape and recon.dtype == np.float32
  direct = np.mean(np.sum((random_data - recon).astype(np.float64) ** 2, axis=1))
  assert direct == pytest.approx(result.reconstruction_error, rel=1e-4)
  for levels in range(1, 4):
    partial = rq.reconstruct(result.codes[:, :levels], result.centres[:levels])
    err = np.mean(np.sum((random_data - partial).astype(np.float64) ** 2, axis=1))
    assert err == pytest.approx(errors[levels - 1], rel=1e-4)


def test_same_seed_is_deterministic_and_other_seed_differs(random_data):
  a = rq.rq_kmeans(random_data, levels=2, codes_per_level=10, seed=7)
  b = rq.rq_kmeans(random_data, levels=2, codes_per_level=10, seed=7)
  c = rq.rq_kmeans(random_data, levels=2, codes_per_level=10, seed=8)
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_array_equal(a.centres, b.centres)
  assert a.level_errors == b.level_errors
  assert not np.array_equal(a.centres, c.centres)


def test_chunked_distances_match_single_chunk(random_data):
  a = rq.rq_kmeans(random_data, levels=2, codes_per_level=6, seed=1, batch_size=7)
  b = rq.rq_kmeans(random_data, levels=2, codes_per_level=6, seed=1)
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_allclose(a.centres, b.centres, rtol=1e-5, atol=1e-6)


def test_assign_codes_reproduces_rq_kmeans_codes(random_data):
  result = rq.rq_kmeans(random_data, levels=3, codes_per_level=9, seed=2, batch_size=64)
  np.testing.assert_array_equal(rq.assign_codes(random_data, result.centres, batch_size=64),
                                result.codes)
  np.testing.assert_array_equal(rq.assign_codes(random_data, result.centres), result.codes)


def test_assign_codes_is_greedy_nearest_residual():
  centres = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]], np.float32)
  x = np.array([[9.0, 1.2], [0.5, -0.7], [11.0, -2.0]], np.float32)
  np.testing.assert_array_equal(rq.assign_codes(x, centres), [[1, 0], [0, 1], [1, 1]])


def test_duplicated_points_use_every_code_without_nan():
  rng = np.random.default_rng(0)
  distinct = rng.normal(size=(10, 4)).astype(np.float32)
  x = np.repeat(distinct, 20, axis=0)
  result = rq.rq_kmeans(x, levels=1, codes_per_level=10, seed=0)
  assert len(np.unique(result.codes)) == 10
  assert result.reconstruction_error == pytest.approx(0.0, abs=1e-6)
  # More codes than distinct points: some clusters must stay empty, yet nothing is NaN.
  result = rq.rq_kmeans(x, levels=2, codes_per_level=12, seed=0)
  assert np.all(np.isfinite(result.centres))
  assert len(np.unique(result.codes[:, 0])) == 10
  assert result.reconstruction_error == pytest.approx(0.0, abs=1e-6)


def test_empty_cluster_is_reseeded_with_farthest_point():
  x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.2, 0.0], [9.0, 0.0]], np.float32)
  centres = np.array([[0.0, 0.0], [5.0, 0.0], [100.0, 100.0]], np.float32)  # 3rd empty
  codes, sq_dist = rq._assign(x, centres, tf.constant(2))
  np.testing.assert_array_equal(codes.numpy(), [0, 0, 1, 1, 1])
  updated = rq._update_centres(x, codes, sq_dist, centres).numpy()
  np.testing.assert_allclose(updated[0], [0.05, 0.0], atol=1e-6)
  np.testing.assert_allclose(updated[1], [19.2 / 3, 0.0], atol=1e-5)
  np.testing.assert_array_equal(updated[2], [9.0, 0.0])  # the farthest point


def test_tolerance_stops_early_and_iterations_cap(random_data):
  def run(**kwargs):
    return rq.rq_kmeans(random_data, levels=1, codes_per_level=8, seed=0, **kwargs)

  # Unstructured data: Lloyd needs several updates to reach a fixed point (tolerance 0), and a
  # 1% tolerance stops it earlier, at a higher error.
  exact = run(iterations=200, tolerance=0.0)
  loose = run(iterations=200, tolerance=0.01)
  assert 1 <= loose.level_iterations[0] < exact.level_iterations[0] < 200
  assert exact.reconstruction_error < loose.reconstruction_error
  assert run(iterations=1, tolerance=0.0).level_iterations == (1,)
  assert run(iterations=3, tolerance=0.0).level_iterations == (3,)


def test_accepts_float64_and_lists():
  x, _ = _blobs(num_blobs=3, per_blob=5, dim=3)
  a = rq.rq_kmeans(x.astype(np.float64), levels=1, codes_per_level=3, seed=0)
  b = rq.rq_kmeans(x.tolist(), levels=1, codes_per_level=3, seed=0)
  np.testing.assert_array_equal(a.codes, b.codes)


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (np.zeros((4, 2)), dict(levels=1, codes_per_level=5), ValueError,
         r"codes_per_level=5.*n=4"),
        (np.zeros((4, 2)), dict(levels=0, codes_per_level=2), ValueError, r"levels.*0"),
        (np.zeros((4, 2)), dict(levels=1, codes_per_level=0), ValueError,
         r"codes_per_level.*0"),
        (np.zeros(4), dict(levels=1, codes_per_level=2), ValueError, r"2-D.*\(4,\)"),
        (np.zeros((2, 2, 2)), dict(levels=1, codes_per_level=2), ValueError, r"2-D.*\(2, 2, 2\)"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]]), dict(levels=1, codes_per_level=1), ValueError,
         r"finite.*x\[1, 0\] = nan"),
        (np.array([[0.0, np.inf]]), dict(levels=1, codes_per_level=1), ValueError, r"inf"),
        (np.zeros((4, 2)), dict(levels=1.5, codes_per_level=2), TypeError, r"levels.*1\.5"),
    ],
)
def test_bad_inputs_raise_with_value(x, kwargs, error, match):
  with pytest.raises(error, match=match):
    rq.rq_kmeans(x, seed=0, **kwargs)


def test_bad_seed_and_tolerance_raise():
  x = np.zeros((4, 2))
  with pytest.raises(TypeError, match=r"seed.*'a'"):
    rq.rq_kmeans(x, levels=1, codes_per_level=2, seed="a")
  with pytest.raises(ValueError, match=r"tolerance.*-1"):
    rq.rq_kmeans(x, levels=1, codes_per_level=2, seed=0, tolerance=-1.0)


def test_assign_codes_and_reconstruct_validate_shapes():
  centres = np.zeros((2, 3, 4), np.float32)
  with pytest.raises(ValueError, match=r"d=4.*d=5"):
    rq.assign_codes(np.zeros((2, 5)), centres)
  with pytest.raises(ValueError, match=r"3-D.*\(3, 4\)"):
    rq.assign_codes(np.zeros((2, 4)), centres[0])
  with pytest.raises(ValueError, match=r"L=2.*\(2, 3\)"):
    rq.reconstruct(np.zeros((2, 3), np.int32), centres)
  with pytest.raises(ValueError, match=r"\[0, M=3\).*7"):
    rq.reconstruct(np.array([[0, 7]]), centres)


def test_residual_centres_of_rq_kmeans_codes_match_its_centres(random_data):
  # At convergence each RQ-kmeans centre is the mean residual of its points (Lloyd's update).
  result = rq.rq_kmeans(random_data, levels=2, codes_per_level=6, seed=0, iterations=200,
                        tolerance=0.0)
  centres = rq.residual_centres(random_data, result.codes, codes_per_level=6)
  np.testing.assert_allclose(centres, result.centres, atol=1e-4)


def test_residual_centres_leave_unused_codes_at_zero_and_reject_bad_codes():
  x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], np.float32)
  codes = np.array([[0], [0], [2]])
  centres = rq.residual_centres(x, codes, codes_per_level=4)
  np.testing.assert_allclose(centres[0], [[2.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  with pytest.raises(ValueError, match='found 4'):
    rq.residual_centres(x, np.array([[0], [4], [1]]), codes_per_level=4)


def test_make_codes_unique_moves_duplicates_to_nearest_free_last_level_code():
  # Level 0: one code; level 1: codes at 0, 1, 5. Points 0 and 1 both pick code 0 at level 1.
  centres = np.array([[[0.0], [100.0], [100.0]], [[0.0], [1.0], [5.0]]], np.float32)
  x = np.array([[0.1], [-0.2], [4.0]], np.float32)
  codes = np.array([[0, 0], [0, 0], [0, 2]])
  unique = rq.make_codes_unique(x, codes, centres)
  # Point 0 keeps (0, 0); point 1 moves to the nearest free code, 1 (distance 1.2), not 2 (taken).
  np.testing.assert_array_equal(unique, [[0, 0], [0, 1], [0, 2]])
  np.testing.assert_array_equal(codes, [[0, 0], [0, 0], [0, 2]])  # the input is not modified


def test_make_codes_unique_gives_every_point_its_own_tuple_on_duplicated_points():
  x = np.repeat(np.random.default_rng(0).normal(size=(10, 4)), 5, axis=0).astype(np.float32)
  result = rq.rq_kmeans(x, levels=2, codes_per_level=16, seed=0)
  assert len(np.unique(result.codes, axis=0)) < len(x)
  assert np.bincount(result.codes[:, 0]).max() <= 16  # every prefix has room for its points
  unique = rq.make_codes_unique(x, result.codes, result.centres)
  assert len(np.unique(unique, axis=0)) == len(x)
  np.testing.assert_array_equal(unique[:, 0], result.codes[:, 0])  # only the last level moves

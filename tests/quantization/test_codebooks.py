"""Tests for tff_rqfed.quantization.codebooks: Eq. 6/9 reconstruction, Eq. 7 fits and Eq. 10 warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from tff_rqfed.quantization import codebooks as cb

L, M, D, I = 2, 4, 3, 12


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  codebooks = rng.normal(size=(2, L, M, D)).astype(np.float32)
  semantic = rng.integers(0, M, size=(I, L)).astype(np.int32)
  collaborative = rng.integers(0, M, size=(I, L)).astype(np.int32)
  targets = rng.normal(size=(I, D)).astype(np.float32)
  return codebooks, semantic, collaborative, targets


def _numpy_reconstruct(codebooks, semantic, collaborative, rate):
  levels = codebooks.shape[1]
  sem = sum(codebooks[0, l][semantic[:, l]] for l in range(levels))
  col = sum(codebooks[1, l][collaborative[:, l]] for l in range(levels))
  return (1 - rate) * sem + rate * col


def _numpy_loss(codebooks, semantic, collaborative, rate, targets, items):
  recon = _numpy_reconstruct(codebooks, semantic, collaborative, rate)[items]
  return float(np.mean(np.sum((targets[items] - recon) ** 2, axis=1)))


@pytest.mark.parametrize('rate', [0.0, 0.3, 1.0])
def test_reconstruct_items_equals_numpy_sum_of_eq6(rate):
  codebooks, semantic, collaborative, _ = _problem()
  got = cb.reconstruct_items(codebooks, semantic, collaborative, rate).numpy()
  np.testing.assert_allclose(got, _numpy_reconstruct(codebooks, semantic, collaborative, rate),
                             rtol=1e-5, atol=1e-6)


def test_collaborative_rate_follows_eq10_warmup():
  assert cb.collaborative_rate(0, warmup_rounds=10) == 0.0
  assert cb.collaborative_rate(3, warmup_rounds=10) == pytest.approx(0.3)
  assert cb.collaborative_rate(10, warmup_rounds=10) == 1.0
  assert cb.collaborative_rate(25, warmup_rounds=10) == 1.0  # capped
  assert cb.collaborative_rate(5, warmup_rounds=0) == 1.0


def test_collaborative_rate_start_round_shifts_the_warmup():
  assert cb.collaborative_rate(2, warmup_rounds=10, start_round=4) == 0.0  # before the start
  assert cb.collaborative_rate(4, warmup_rounds=10, start_round=4) == 0.0
  assert cb.collaborative_rate(9, warmup_rounds=10, start_round=4) == pytest.approx(0.5)
  assert cb.collaborative_rate(14, warmup_rounds=10, start_round=4) == 1.0
  assert cb.collaborative_rate(30, warmup_rounds=10, start_round=4) == 1.0


def test_fit_codebooks_blockwise_reduces_eq7_loss_and_reports_it():
  codebooks, semantic, collaborative, targets = _problem(1)
  items = np.array([0, 2, 3, 5, 7, 8, 11], np.int32)
  fitted, before, after = cb.fit_codebooks_blockwise(
      codebooks, semantic, collaborative, 0.4, targets, items, sweeps=3, ridge=0.5
  )
  fitted = fitted.numpy()
  want_before = _numpy_loss(codebooks, semantic, collaborative, 0.4, targets, items)
  want_after = _numpy_loss(fitted, semantic, collaborative, 0.4, targets, items)
  assert float(before) == pytest.approx(want_before, rel=1e-5)
  assert float(after) == pytest.approx(want_after, rel=1e-4)
  assert want_after < 0.5 * want_before


def test_fit_codebooks_blockwise_leaves_codes_no_fitted_item_uses_unchanged():
  codebooks, semantic, collaborative, targets = _problem(2)
  items = np.array([1, 4, 6], np.int32)
  fitted, _, _ = cb.fit_codebooks_blockwise(
      codebooks, semantic, collaborative, 0.5, targets, items, sweeps=2, ridge=0.1
  )
  fitted = fitted.numpy()
  for channel, ids in ((0, semantic), (1, collaborative)):
    for level in range(L):
      used = set(ids[items, level].tolist())
      for code in range(M):
        if code in used:
          assert not np.array_equal(fitted[channel, level, code], codebooks[channel, level, code])
        else:
          np.testing.assert_array_equal(fitted[channel, level, code],
                                        codebooks[channel, level, code])


def test_fit_codebooks_blockwise_without_ridge_reproduces_targets_with_one_code_per_item():
  rng = np.random.default_rng(3)
  codebooks = rng.normal(size=(2, 1, 5, D)).astype(np.float32)
  semantic = rng.permutation(5).astype(np.int32)[:, None]
  collaborative = rng.permutation(5).astype(np.int32)[:, None]
  targets = rng.normal(size=(5, D)).astype(np.float32)
  fitted, before, after = cb.fit_codebooks_blockwise(
      codebooks, semantic, collaborative, 0.3, targets, np.arange(5, dtype=np.int32),
      sweeps=1, ridge=0.0,
  )
  assert float(before) > 1.0
  assert float(after) == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(
      cb.reconstruct_items(fitted, semantic, collaborative, 0.3).numpy(), targets, atol=1e-5
  )


@pytest.mark.parametrize('ridge', [0.0, 1.0, 0.3])
def test_fit_codebooks_blockwise_at_rate_zero_leaves_collaborative_channel_unchanged(ridge):
  codebooks, semantic, collaborative, targets = _problem(4)
  fitted, before, after = cb.fit_codebooks_blockwise(
      codebooks, semantic, collaborative, 0.0, targets, np.arange(I, dtype=np.int32),
      sweeps=2, ridge=ridge,
  )
  fitted = fitted.numpy()
  np.testing.assert_array_equal(fitted[1], codebooks[1])
  assert not np.array_equal(fitted[0], codebooks[0])
  assert float(after) < float(before)


def test_fit_codebooks_adam_reduces_eq7_loss_and_keeps_unused_rows():
  codebooks, semantic, collaborative, targets = _problem(5)
  rows, coef = cb.codebook_parameterisation(semantic, collaborative, 0.5, codes_per_level=M)
  items = np.array([0, 1, 2, 3, 4, 5], np.int32)
  params0 = cb.flatten(codebooks).numpy()
  params, before, after = cb.fit_codebooks(
      params0, rows, coef, targets, items, steps=100, learning_rate=0.05
  )
  params = params.numpy()
  want_before = _numpy_loss(codebooks, semantic, collaborative, 0.5, targets, items)
  assert float(before) == pytest.approx(want_before, rel=1e-5)
  assert float(after) == pytest.approx(
      _numpy_loss(params.reshape(2, L, M, D), semantic, collaborative, 0.5, targets, items),
      rel=1e-4)
  assert float(after) < 0.5 * float(before)
  used = np.unique(rows.numpy()[items].ravel())
  unused = np.setdiff1d(np.arange(2 * L * M), used)
  assert unused.size > 0
  np.testing.assert_array_equal(params[unused], params0[unused])


def test_least_squares_codebook_reproduces_exactly_representable_targets():
  rng = np.random.default_rng(6)
  true = rng.normal(size=(2, 3, 4))  # L=2, M=3, d=4
  codes = np.array([[a, b] for a in range(3) for b in range(3)], np.int32)  # all 9 pairs
  scale = 0.5
  targets = scale * (true[0][codes[:, 0]] + true[1][codes[:, 1]])
  solution = cb.least_squares_codebook(codes, targets, codes_per_level=3, scale=scale, l2=1e-9)
  assert solution.shape == (2, 3, 4) and solution.dtype == np.float32
  recon = scale * (solution[0][codes[:, 0]] + solution[1][codes[:, 1]])
  np.testing.assert_allclose(recon, targets, atol=1e-5)


def _numpy_blockwise(codebooks, semantic, collaborative, rate, targets, items, *, sweeps, ridge):
  """Reference block coordinate descent of Eq. 7 (+ ridge), one (channel, level) block at a time."""
  books = codebooks.astype(np.float64).copy()
  ids = [semantic[items], collaborative[items]]
  coef = [1.0 - rate, rate]
  reconstruction = lambda: sum(coef[c] * books[c, l][ids[c][:, l]]
                               for c in range(2) for l in range(books.shape[1]))
  for _ in range(sweeps):
    for c in range(2):
      if coef[c] == 0.0:
        continue  # a block with coefficient 0 is not in Eq. 7 and keeps its value
      for l in range(books.shape[1]):
        residual = targets[items] - reconstruction() + coef[c] * books[c, l][ids[c][:, l]]
        for j in np.unique(ids[c][:, l]):
          use = ids[c][:, l] == j
          books[c, l, j] = ((coef[c] * residual[use].sum(0) + ridge * books[c, l, j])
                            / (coef[c] ** 2 * use.sum() + ridge))
  return books


@pytest.mark.parametrize('rate', [0.0, 0.4, 1.0])
def test_fit_codebooks_blockwise_equals_a_numpy_block_coordinate_descent(rate):
  codebooks, semantic, collaborative, targets = _problem(4)
  items = np.array([0, 1, 3, 4, 6, 9, 10, 11], np.int32)
  fitted, _, _ = cb.fit_codebooks_blockwise(
      codebooks, semantic, collaborative, rate, targets, items, sweeps=2, ridge=0.7)
  want = _numpy_blockwise(codebooks, semantic, collaborative, rate, targets, items, sweeps=2, ridge=0.7)
  np.testing.assert_allclose(fitted.numpy(), want, rtol=1e-4, atol=1e-5)
  assert not np.allclose(want, codebooks)  # the fit moved some codes

"""RQFedRec (Alg. 1) on a tiny planted problem: refresh timing, warm-up, ablations and codebook uploads."""

from __future__ import annotations

import collections
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest

from tff_rqfed.algorithms import rqfedrec
from tff_rqfed.data.partition import ClientData
from tff_rqfed.federated import client_work as cw
from tff_rqfed.federated import process as process_lib
from tff_rqfed.quantization import codebooks as cb

NUM_USERS, NUM_ITEMS, NUM_CLIENTS, D = 32, 40, 8, 8
L, M = 2, 4
TRAINING = cw.LocalTraining(epochs=1, batch_size=32, num_negatives=4, learning_rate=0.05)


def planted_clients(seed=0):
  """8 clients of 4 users; users 0-15 like items 0-19, users 16-31 items 20-39 (8 positives each)."""
  rng = np.random.default_rng(seed)
  clients = []
  for k in range(NUM_CLIENTS):
    users = np.arange(4 * k, 4 * k + 4, dtype=np.int32)
    local, items = [], []
    for j, u in enumerate(users):
      group = np.arange(20) + (0 if u < NUM_USERS // 2 else 20)
      chosen = rng.choice(group, size=8, replace=False)
      local += [j] * 8
      items += chosen.tolist()
    clients.append(ClientData(users, np.asarray(local, np.int32), np.asarray(items, np.int32)))
  return clients


def text_embeddings(seed=0):
  """float32[40, 16]: two semantic communities matching the interaction communities."""
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(2, 16))
  return (means[np.arange(NUM_ITEMS) // 20] + 0.3 * rng.normal(size=(NUM_ITEMS, 16))).astype(np.float32)


def build(seed=0, **overrides):
  text = overrides.pop('text', text_embeddings())
  options = dict(levels=L, codes_per_level=M, refresh_every=2, warmup_rounds=4, kmeans_iterations=10)
  options.update(overrides)
  return rqfedrec.build_rqfedrec(num_items=NUM_ITEMS, text_embeddings=text, embedding_dim=D,
                                 training=TRAINING, config=rqfedrec.RQConfig(**options), seed=seed)


def run(process, rounds, clients, seed=0):
  """Returns the server states (index 0 = initial) and the metrics of rounds 1..rounds."""
  state = process.initialize()
  states = [collections.OrderedDict((k, np.asarray(v)) for k, v in dict(state).items())]
  client_states = process.initial_client_states(clients)
  history = []
  for t in range(1, rounds + 1):
    data = process_lib.client_data_values(clients, seed=seed, round_num=t)
    state, client_states, metrics = process.next(state, client_states, data, round_num=t)
    states.append(collections.OrderedDict((k, np.asarray(v)) for k, v in dict(state).items()))
    history.append(metrics)
  return states, history


def ids_changed(states):
  """Rounds t (1-based) after which the collaborative ids differ from those before it."""
  return [t for t in range(1, len(states))
          if not np.array_equal(states[t]['collaborative_ids'], states[t - 1]['collaborative_ids'])]


@pytest.fixture(scope='module')
def clients():
  return planted_clients()


@pytest.fixture(scope='module')
def main_run(tff_context, clients):
  return run(build(), 6, clients)


def test_collaborative_rate_is_zero_until_first_refresh_then_warms_up(main_run):
  states, history = main_run
  assert states[0]['collaborative_rate'] == 0.0
  assert states[1]['collaborative_rate'] == 0.0
  # Round 2 refreshes; warmup_from='first_refresh': lambda_t = min(1, (t - 2) / 4) for round t + 1.
  assert [m['collaborative_rate'] for m in history] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
  assert [float(s['collaborative_rate']) for s in states[1:]] == pytest.approx(
      [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


def test_max_collaborative_rate_scales_the_warm_up_and_keeps_semantic_codes_trained(tff_context, clients):
  states, history = run(build(max_collaborative_rate=0.5), 6, clients)
  assert [m['collaborative_rate'] for m in history] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
  # With lambda held below 1 the fit still moves semantic codes after the warm-up.
  assert not np.array_equal(states[6]['codebooks'][cb.SEMANTIC], states[5]['codebooks'][cb.SEMANTIC])


def test_quantise_with_kmeans_dim_clusters_principal_components_and_keeps_d_dim_centres():
  from sklearn import decomposition
  from tff_rqfed.quantization import rq_kmeans
  points = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
  config = rqfedrec.RQConfig(levels=2, codes_per_level=5, kmeans_dim=3, kmeans_iterations=10)
  codes, centres = rqfedrec.quantise(points, config=config, seed=1)
  reduced = decomposition.PCA(n_components=3, svd_solver='full').fit_transform(points)
  expected = rq_kmeans.rq_kmeans(reduced.astype(np.float32), levels=2, codes_per_level=5, seed=1,
                                 iterations=10).codes
  np.testing.assert_array_equal(codes, expected)
  assert centres.shape == (2, 5, 16)
  np.testing.assert_allclose(centres, rq_kmeans.residual_centres(points, codes, codes_per_level=5))
  # kmeans_dim >= d means no reduction: plain RQ-kmeans.
  full_codes, _ = rqfedrec.quantise(points, config=dataclasses_replace(config, kmeans_dim=16), seed=1)
  np.testing.assert_array_equal(
      full_codes, rq_kmeans.rq_kmeans(points, levels=2, codes_per_level=5, seed=1, iterations=10).codes)


def test_unique_codes_give_items_distinct_tuples_as_far_as_m_allows(tff_context, clients):
  states, history = run(build(unique_codes=True, codes_per_level=8), 2, clients)
  for ids in (states[-1]['semantic_ids'], states[-1]['collaborative_ids']):
    # A prefix (the first L - 1 codes) shared by n items yields min(n, M) distinct tuples at most.
    _, prefix_counts = np.unique(ids[:, :-1], axis=0, return_counts=True)
    assert len(np.unique(ids, axis=0)) == np.minimum(prefix_counts, 8).sum()
  assert history[1]['distinct_collaborative_tuples'] == len(
      np.unique(states[2]['collaborative_ids'], axis=0))


def test_kmeans_dim_run_refreshes_ids_with_full_dimensional_codebooks(tff_context, clients):
  states, history = run(build(kmeans_dim=2), 4, clients)
  assert ids_changed(states) == [2, 4]
  # Ids come from 2 principal components, code values from the items in all D dimensions.
  collaborative_values = states[-1]['codebooks'][cb.COLLABORATIVE].reshape(L * M, D)
  assert np.linalg.matrix_rank(collaborative_values, tol=1e-4) > 2
  assert all(np.isfinite(m['loss']) for m in history)


def test_collaborative_ids_are_refreshed_every_tau_rounds_only(main_run):
  states, history = main_run
  np.testing.assert_array_equal(states[1]['collaborative_ids'], np.zeros((NUM_ITEMS, L)))
  assert ids_changed(states) == [2, 4, 6]
  assert [t for t, m in enumerate(history, 1) if 'refresh_change' in m] == [2, 4, 6]
  for t in (2, 4, 6):
    assert history[t - 1]['distinct_collaborative_tuples'] == len(
        np.unique(states[t]['collaborative_ids'], axis=0))
  # Semantic ids never change; the collaborative ids use several codes after a refresh.
  for s in states:
    np.testing.assert_array_equal(s['semantic_ids'], states[0]['semantic_ids'])
  assert len(np.unique(states[2]['collaborative_ids'][:, 0])) > 1


def test_round_one_changes_only_semantic_codes_and_every_fit_lowers_the_code_loss(main_run):
  states, history = main_run
  for m in history:
    assert m['changed_codes'] > 0
    assert m['code_loss_after'] <= m['code_loss_before'] + 1e-6
  # Round 1 has lambda = 0: only semantic codes can change, so the collaborative codebook the server
  # averages is the broadcast one.
  assert history[0]['changed_codes'] <= L * M
  np.testing.assert_array_equal(states[1]['codebooks'][cb.COLLABORATIVE],
                                states[0]['codebooks'][cb.COLLABORATIVE])
  assert not np.array_equal(states[1]['codebooks'][cb.SEMANTIC], states[0]['codebooks'][cb.SEMANTIC])


def test_fix_collaborative_ids_builds_them_once(tff_context, clients):
  states, history = run(build(fix_collaborative_ids=True), 4, clients)
  assert ids_changed(states) == [2]
  assert [t for t, m in enumerate(history, 1) if 'refresh_change' in m] == [2]
  assert [m['collaborative_rate'] for m in history] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_semantic_channel_only_never_refreshes_and_keeps_rate_zero(tff_context, clients):
  states, history = run(build(channels='semantic'), 3, clients)
  assert ids_changed(states) == []
  assert all('refresh_change' not in m for m in history)
  assert [m['collaborative_rate'] for m in history] == [0.0, 0.0, 0.0]
  np.testing.assert_array_equal(states[-1]['collaborative_ids'], np.zeros((NUM_ITEMS, L)))
  # lambda = 0: the collaborative codebook is never touched, the semantic one is trained.
  np.testing.assert_array_equal(states[-1]['codebooks'][cb.COLLABORATIVE], np.zeros((L, M, D)))
  assert not np.array_equal(states[-1]['codebooks'][cb.SEMANTIC], states[0]['codebooks'][cb.SEMANTIC])


def test_collaborative_channel_only_keeps_rate_one(tff_context, clients):
  states, history = run(build(channels='collaborative', text=None), 2, clients)
  assert float(states[0]['collaborative_rate']) == 1.0
  assert [m['collaborative_rate'] for m in history] == [1.0, 1.0]
  np.testing.assert_array_equal(states[-1]['semantic_ids'], np.zeros((NUM_ITEMS, L)))
  np.testing.assert_array_equal(states[-1]['codebooks'][cb.SEMANTIC], np.zeros((L, M, D)))
  assert ids_changed(states) == [2]


def test_lstsq_refresh_keeps_item_embeddings_closer_than_kmeans_centres(tff_context, clients, main_run):
  _, lstsq_history = main_run
  _, centres_history = run(build(refresh_values='centres'), 2, clients)
  lstsq_change = lstsq_history[1]['refresh_change']
  centres_change = centres_history[1]['refresh_change']
  assert lstsq_change < 0.5 * centres_change
  assert lstsq_change < 0.1


def test_uploaded_codebook_changes_only_codes_of_the_clients_positives(tff_context, clients):
  process = build(codebook_items='positives')
  state = process.initialize()
  rng = np.random.default_rng(7)
  payload = collections.OrderedDict(
      codebooks=rng.normal(scale=0.1, size=(2, L, M, D)).astype(np.float32),
      semantic_ids=np.asarray(state['semantic_ids']),
      collaborative_ids=rng.integers(0, M, size=(NUM_ITEMS, L)).astype(np.int32),
      collaborative_rate=np.float32(0.5),
  )
  client = clients[0]
  users = process.initial_client_states([client])[0]
  data = process_lib.client_data_values([client], seed=0, round_num=1)[0]
  out = process.client_work(payload, users, data)
  upload = np.asarray(out.upload if hasattr(out, 'upload') else out[0])
  metrics = out.metrics if hasattr(out, 'metrics') else out[3]
  changed = np.any(upload != payload['codebooks'], axis=-1)  # [2, L, M]
  used = np.zeros((2, L, M), bool)
  positives = np.unique(client.items)
  for level in range(L):
    used[0, level, payload['semantic_ids'][positives, level]] = True
    used[1, level, payload['collaborative_ids'][positives, level]] = True
  assert changed.any()
  assert not (changed & ~used).any()
  assert int(metrics['changed_codes']) == changed.sum()
  assert int(metrics['fitted_items']) == positives.size


def test_without_item_embedding_trains_codebooks_directly_and_lowers_the_loss(tff_context, clients):
  states, history = run(build(item_embedding=False), 4, clients)
  losses = [m['loss'] for m in history]
  assert losses[-1] < losses[0] - 0.02
  assert all(m['code_loss_before'] == 0.0 for m in history)
  assert not np.array_equal(states[-1]['codebooks'], states[0]['codebooks'])


@pytest.mark.parametrize('option, value', [
    ('channels', 'all'), ('codebook_fit', 'sgd'), ('codebook_items', 'negatives'),
    ('refresh_values', 'kmeans'), ('warmup_from', 'one'), ('semantic_init', 'zeros'), ('code_ids', 'md5'),
])
def test_rqconfig_rejects_unknown_option_values_quoting_them(option, value):
  with pytest.raises(ValueError, match=f"{option} must be one of .*'{value}'"):
    rqfedrec.RQConfig(**{option: value})


@pytest.mark.parametrize('option, value', [
    ('levels', 0), ('codes_per_level', -1), ('refresh_every', 0), ('laplace_scale', -0.5),
    ('codebook_ridge', -1.0), ('kmeans_dim', -2),
])
def test_rqconfig_rejects_out_of_range_numbers_quoting_them(option, value):
  with pytest.raises(ValueError, match=f'{option} must be >= 0?.*{value}'):
    rqfedrec.RQConfig(**{option: value})


@pytest.mark.parametrize('value', [0.0, 1.5, -0.2])
def test_rqconfig_rejects_a_collaborative_rate_ceiling_outside_zero_one(value):
  with pytest.raises(ValueError, match=f'max_collaborative_rate must be in \\(0, 1\\], got {value}'):
    rqfedrec.RQConfig(max_collaborative_rate=value)


def test_build_rejects_more_codes_than_items():
  with pytest.raises(ValueError, match='codes_per_level=64'):
    rqfedrec.build_rqfedrec(num_items=NUM_ITEMS, text_embeddings=text_embeddings(), embedding_dim=D,
                            config=rqfedrec.RQConfig(codes_per_level=64))


@pytest.mark.parametrize('codebook_fit', ['blockwise', 'adam'])
def test_a_client_without_training_data_adds_weight_zero_and_no_nan(tff_context, codebook_fit):
  # Clients without data occur with per_user partitions and subsampled clients: their Eq. 7 fit
  # covers no item, so they must upload the global codebooks with weight 0 and finite metrics
  # (a NaN metric at weight 0 still makes the weighted mean NaN).
  config = rqfedrec.RQConfig(levels=L, codes_per_level=M, kmeans_iterations=5,
                             codebook_fit=codebook_fit, codebook_steps=5)
  process = rqfedrec.build_rqfedrec(num_items=NUM_ITEMS, text_embeddings=text_embeddings(),
                                    embedding_dim=D, training=TRAINING, config=config)
  empty = ClientData(np.array([NUM_USERS], np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
  clients = [planted_clients()[0], empty]
  state = process.initialize()
  payload = process.payload(state)
  data = process_lib.client_data_values(clients, seed=0, round_num=1)
  out = process.client_work(payload, process.initial_client_states([empty])[0], data[1])
  assert float(out.weight) == 0.0
  np.testing.assert_array_equal(np.asarray(out.upload), np.asarray(payload['codebooks']))
  assert all(np.isfinite(float(v)) for v in out.metrics.values())
  _, _, metrics = process.next(state, process.initial_client_states(clients), data, round_num=1)
  assert all(np.isfinite(v) for v in metrics.values()), metrics


# --- What a run learns and computes (issue 12) ---------------------------------------------------


def numpy_items(codebooks, semantic_ids, collaborative_ids, rate):
  """Eq. 9 written out: (1 - lambda) sum_l C_s[l, s_il] + lambda sum_l C_c[l, c_il], float32[I, d]."""
  codebooks = np.asarray(codebooks, np.float64)
  semantic = sum(codebooks[0, level, semantic_ids[:, level]] for level in range(semantic_ids.shape[1]))
  collaborative = sum(codebooks[1, level, collaborative_ids[:, level]]
                      for level in range(collaborative_ids.shape[1]))
  return (1.0 - rate) * semantic + rate * collaborative


def random_payload(state, *, rate, seed=7):
  rng = np.random.default_rng(seed)
  return collections.OrderedDict(
      codebooks=rng.normal(size=(2, L, M, D)).astype(np.float32),
      semantic_ids=np.asarray(state['semantic_ids']),
      collaborative_ids=rng.integers(0, M, size=(NUM_ITEMS, L)).astype(np.int32),
      collaborative_rate=np.float32(rate),
  )


def test_rqfedrec_ranks_test_items_better_than_popularity_and_random(
    tff_context, planted_problem, assert_learned_the_communities):
  split, split_clients = planted_problem
  process = build()
  states, history = run(process, 8, split_clients)
  assert history[-1]['loss'] < 0.8 * history[0]['loss']
  state = states[-1]
  client_states = run_client_states(process, 8, split_clients)
  assert_learned_the_communities(process.scores(state, client_states, split_clients, NUM_USERS), split)


def run_client_states(process, rounds, clients):
  """The private user tables after `rounds` rounds of `run` (the same seeds, so the same run)."""
  state, client_states = process.initialize(), process.initial_client_states(clients)
  for t in range(1, rounds + 1):
    data = process_lib.client_data_values(clients, seed=0, round_num=t)
    state, client_states, _ = process.next(state, client_states, data, round_num=t)
  return client_states


def test_same_seed_gives_identical_codebooks_ids_and_metrics_and_another_seed_does_not(
    tff_context, clients, main_run):
  states, history = main_run
  again_states, again_history = run(build(), 6, clients)
  assert again_history == history
  for before, after in zip(states, again_states):
    for key in before:
      np.testing.assert_array_equal(after[key], before[key], err_msg=key)
  other_states, other_history = run(build(seed=1), 4, clients, seed=1)
  assert other_history != history[:4]
  assert not np.array_equal(other_states[4]['codebooks'], states[4]['codebooks'])
  assert not np.array_equal(other_states[2]['collaborative_ids'], states[2]['collaborative_ids'])


def test_laplace_noise_of_eq11_reaches_the_upload_at_the_stated_scale(tff_context, clients):
  # One semantic code per item (L = 1, M = I, distinct codes), lambda = 0 and an unregularised fit:
  # each fitted item's code becomes its trained embedding, so the upload minus the noiseless upload is
  # the Laplace noise itself on the items the client fitted, and 0 on the others.
  delta = 0.05
  options = dict(levels=1, codes_per_level=NUM_ITEMS, unique_codes=True, codebook_ridge=0.0,
                 codebook_sweeps=1, kmeans_iterations=5)
  uploads, fitted = {}, {}
  for scale in (0.0, delta):
    process = build(**options, laplace_scale=scale)
    state = process.initialize()
    assert len(np.unique(np.asarray(state['semantic_ids'])[:, 0])) == NUM_ITEMS
    data = process_lib.client_data_values(clients[:1], seed=0, round_num=1)[0]
    out = process.client_work(process.payload(state), process.initial_client_states(clients[:1])[0],
                              data)
    uploads[scale] = np.asarray(out.upload)[cb.SEMANTIC, 0]  # [M, d]
    fitted[scale] = int(out.metrics['fitted_items'])
  assert fitted[0.0] == fitted[delta] > 20
  noise = uploads[delta] - uploads[0.0]
  moved = np.any(noise != 0.0, axis=1)
  assert moved.sum() == fitted[delta]
  assert np.mean(np.abs(noise[moved])) == pytest.approx(delta, rel=0.2)
  assert np.mean(noise[moved] > 0) == pytest.approx(0.5, abs=0.1)


def test_laplace_noise_run_is_deterministic_and_differs_from_the_noiseless_run(
    tff_context, clients, main_run):
  noisy = [run(build(laplace_scale=0.05), 3, clients) for _ in range(2)]
  assert noisy[0][1] == noisy[1][1]
  np.testing.assert_array_equal(noisy[0][0][3]['codebooks'], noisy[1][0][3]['codebooks'])
  assert not np.array_equal(noisy[0][0][1]['codebooks'], main_run[0][1]['codebooks'])


def test_warmup_from_zero_follows_the_literal_eq10_schedule_after_the_first_refresh(tff_context, clients):
  # Paper's Eq. 10: lambda_t = min(1, t / T_warm); held at 0 until the first refresh (round 2) gives
  # collaborative ids: lambda_3 = 3/4, then 1.
  states, history = run(build(warmup_from='zero'), 4, clients)
  assert [m['collaborative_rate'] for m in history] == pytest.approx([0.0, 0.75, 1.0, 1.0])
  assert all(np.isfinite(m['loss']) and np.isfinite(m['code_loss_after']) for m in history)
  assert ids_changed(states) == [2, 4]
  assert not np.array_equal(states[3]['codebooks'][cb.COLLABORATIVE], states[2]['codebooks'][cb.COLLABORATIVE])


@pytest.mark.parametrize('rate', [0.0, 0.3, 1.0])
def test_client_item_table_is_the_eq9_reconstruction_of_the_broadcast(tff_context, rate):
  payload = random_payload(build().initialize(), rate=rate)
  table = rqfedrec.rebuild_item_table(payload).numpy()
  expected = numpy_items(payload['codebooks'], payload['semantic_ids'], payload['collaborative_ids'], rate)
  np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-5)


def test_refresh_clusters_the_l2_normalised_item_embeddings(tff_context):
  # Items whose reconstructed embeddings differ in norm several-fold: the refresh's ids are RQ-kmeans
  # of their directions (Sec. 4.3.2), which k-means of the raw embeddings does not reproduce.
  process = build()
  state = collections.OrderedDict(process.initialize())
  rng = np.random.default_rng(3)
  codebooks = np.zeros((2, L, M, D), np.float32)
  codebooks[cb.SEMANTIC] = rng.normal(size=(L, M, D)) * rng.uniform(0.1, 10.0, size=(L, M, 1))
  state['codebooks'] = codebooks
  state['collaborative_rate'] = np.float32(0.0)
  items = numpy_items(codebooks, np.asarray(state['semantic_ids']), np.asarray(state['collaborative_ids']),
                      0.0).astype(np.float32)
  norms = np.linalg.norm(items, axis=1, keepdims=True)
  assert norms.max() / norms.min() > 3
  refreshed, info = process.after_round(state, 2)
  config = rqfedrec.RQConfig(levels=L, codes_per_level=M, kmeans_iterations=10)
  expected, _ = rqfedrec.quantise(items / norms, config=config, seed=0 + 2)
  raw, _ = rqfedrec.quantise(items, config=config, seed=0 + 2)
  np.testing.assert_array_equal(refreshed['collaborative_ids'], expected)
  assert not np.array_equal(expected, raw)
  assert 'refresh_change' in info


def test_scores_are_user_embeddings_times_reconstructed_item_vectors(tff_context):
  process = build()
  payload = random_payload(process.initialize(), rate=0.4, seed=11)
  state = collections.OrderedDict(payload, round_num=np.int32(3))
  # Two clients whose users are not contiguous: each score row must belong to the right user.
  clients = [ClientData(np.array([5, 1], np.int32), np.zeros(1, np.int32), np.zeros(1, np.int32)),
             ClientData(np.array([0, 7, 3], np.int32), np.zeros(1, np.int32), np.zeros(1, np.int32))]
  rng = np.random.default_rng(2)
  client_states = [rng.normal(size=(2, D)).astype(np.float32), rng.normal(size=(3, D)).astype(np.float32)]
  scores = process.scores(state, client_states, clients, 9)
  users = np.zeros((9, D))
  users[[5, 1]], users[[0, 7, 3]] = client_states
  expected = users @ numpy_items(payload['codebooks'], payload['semantic_ids'],
                                 payload['collaborative_ids'], 0.4).T
  assert scores.shape == (9, NUM_ITEMS)
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(scores[[2, 4, 6, 8]], 0.0)  # users in no client


@pytest.mark.parametrize('options, rates, due', [
    (dict(), [0, 0, 0.25, 0.5, 0.75, 1, 1, 1], [2, 4, 6, 8]),
    (dict(warmup_from='zero'), [0, 0, 0.75, 1, 1, 1, 1, 1], [2, 4, 6, 8]),
    (dict(fix_collaborative_ids=True), [0, 0, 0.25, 0.5, 0.75, 1, 1, 1], [2]),
    (dict(channels='semantic'), [0] * 8, []),
    (dict(channels='collaborative'), [1] * 8, [2, 4, 6, 8]),
])
def test_refresh_schedule_is_a_function_of_the_round_number_alone(options, rates, due):
  # What a resumed run needs: a new CollaborativeRefresh gives the lambda and refresh rounds of the
  # one that ran the earlier rounds (rounds 1..8, tau = 2, T_warm = 4).
  refresh = rqfedrec.CollaborativeRefresh(
      config=rqfedrec.RQConfig(refresh_every=2, warmup_rounds=4, **options), seed=0)
  assert [refresh.rate(t) for t in range(1, 9)] == pytest.approx(rates)
  assert [t for t in range(1, 9) if refresh.due(t)] == due


def test_hash_code_ids_are_fixed_per_channel_and_ignore_text_and_training(tff_context, clients):
  # Table 6's hash-based codebook: ids hash the item id, so neither the text embeddings nor a refresh
  # changes them, and the two channels hash differently; the round still trains the code values.
  states, history = run(build(code_ids='hash'), 4, clients)
  other_text = build(code_ids='hash', text=text_embeddings(seed=5)).initialize()
  semantic = rqfedrec.hash_codes(NUM_ITEMS, levels=L, codes_per_level=M, channel=cb.SEMANTIC)
  collaborative = rqfedrec.hash_codes(NUM_ITEMS, levels=L, codes_per_level=M, channel=cb.COLLABORATIVE)
  assert not np.array_equal(semantic, collaborative)
  np.testing.assert_array_equal(np.asarray(other_text['semantic_ids']), semantic)
  for state in states:
    np.testing.assert_array_equal(state['semantic_ids'], semantic)
  for state in states[2:]:  # after the first refresh (round 2)
    np.testing.assert_array_equal(state['collaborative_ids'], collaborative)
  assert [t for t, m in enumerate(history, 1) if 'refresh_change' in m] == [2, 4]
  assert history[-1]['loss'] < history[0]['loss']
  assert not np.array_equal(states[-1]['codebooks'], states[0]['codebooks'])
  # Every code of every level is used by some item (40 items into 4 buckets).
  assert all(len(np.unique(semantic[:, level])) == M for level in range(L))


def test_rq_vae_code_ids_follow_the_text_communities_and_are_refreshed(tff_context, clients):
  # Table 6's RQ-VAE codebook: the semantic ids come from an RQ-VAE over the text embeddings, whose
  # two communities (items 0-19 and 20-39) no first-level code mixes; the refreshes rebuild the
  # collaborative ids the same way, and the code values train.
  states, history = run(build(code_ids='rq_vae'), 4, clients)
  semantic = states[0]['semantic_ids']
  for code in np.unique(semantic[:, 0]):
    members = np.flatnonzero(semantic[:, 0] == code)
    assert np.all(members < 20) or np.all(members >= 20), (code, members)
  assert not np.array_equal(semantic, build().initialize()['semantic_ids'])
  assert ids_changed(states) == [2, 4]
  assert history[-1]['loss'] < history[0]['loss']

"""Tests of liftkit.lift.splits (LIFT App. E): component split, ZTP MOI estimate, MOI subsampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift.library import EmpiricalLibrary
from liftkit.lift.screen import Screen
from liftkit.lift.splits import (
    ClonePool,
    component_split,
    estimate_moi,
    subsample_indices,
    subsample_to_moi,
    truncated_poisson_pmf,
)


def make_screen(counts: np.ndarray, seq_idx: np.ndarray, n_seq: int, n0: int = 0) -> Screen:
    """A Screen built directly from per-cell counts and entry -> sequence indices."""
    counts = np.asarray(counts, dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    # distinct token rows: sequence s is encoded as its base-20 digits (unique per s)
    digits = np.stack([(np.arange(n_seq) // 20**k) % 20 + 1 for k in range(4)], axis=1)
    y = np.arange(counts.size, dtype=np.float32) + 1.0  # unique y identifies each cell
    return Screen(
        tokens=torch.from_numpy(digits).long(),
        cell_ptr=torch.from_numpy(ptr).long(),
        seq_idx=torch.from_numpy(np.asarray(seq_idx, dtype=np.int64)),
        y=torch.from_numpy(y),
        n0=n0,
        n_cells=counts.size + n0,
        moi=1.0,
    )


def random_screen(n_cells: int, n_seq: int, moi: float, seed: int) -> Screen:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(moi, size=4 * n_cells)
    counts = counts[counts > 0][:n_cells]
    return make_screen(counts, rng.integers(n_seq, size=counts.sum()), n_seq, n0=3 * n_cells)


def seq_sets(screen: Screen, cells: np.ndarray) -> set[tuple[int, ...]]:
    """Token rows (as tuples) used by the given cells of the original screen."""
    sub = screen.subset(torch.from_numpy(cells))
    return {tuple(r) for r in sub.tokens[sub.seq_idx].tolist()}


def check_split(screen: Screen, split) -> None:
    n = screen.n_sorted
    tr, te = split.train_cells, split.test_cells
    assert np.intersect1d(tr, te).size == 0  # no shared cell
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(n))  # union is everything
    assert not (seq_sets(screen, tr) & seq_sets(screen, te))  # no shared sequence
    # sub-screens hold exactly those cells (y identifies cells) and their sequences
    assert torch.equal(split.train.y, screen.y[torch.from_numpy(tr)])
    assert torch.equal(split.test.y, screen.y[torch.from_numpy(te)])
    tr_tokens = {tuple(r) for r in split.train.tokens.tolist()}
    te_tokens = {tuple(r) for r in split.test.tokens.tolist()}
    assert not (tr_tokens & te_tokens)
    assert split.sizes.sum() == n


@pytest.mark.parametrize(("moi", "n_seq", "seed"), [(1.2, 3000, 0), (2.0, 800, 1), (0.5, 200, 2)])
def test_component_split_random_graphs(moi, n_seq, seed):
    screen = random_screen(600, n_seq, moi, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dense graphs may have a giant component
        split = component_split(screen, test_fraction=0.15, seed=seed)
    check_split(screen, split)
    assert 0 < split.test_cells.size <= 0.15 * screen.n_sorted
    # unsorted cells apportioned by share of sorted cells
    assert split.train.n0 + split.test.n0 == pytest.approx(screen.n0, abs=1)


def test_component_split_singletons_fill_target():
    n = 500
    screen = make_screen(np.ones(n), np.arange(n), n)  # every cell its own sequence
    split = component_split(screen, test_fraction=0.2, seed=0)
    check_split(screen, split)
    assert split.test_cells.size == 100  # components of size 1 fill the target exactly
    assert (split.sizes == 1).all()


def test_component_split_giant_component_stays_in_train():
    # 400 cells all sharing sequence 0 (one giant component) + 100 singleton cells
    giant_counts = np.full(400, 2)
    giant_seqs = np.stack([np.zeros(400, int), 1 + np.arange(400)], axis=1).ravel()
    single_seqs = 401 + np.arange(100)
    screen = make_screen(
        np.concatenate([giant_counts, np.ones(100, int)]),
        np.concatenate([giant_seqs, single_seqs]),
        501,
    )
    with pytest.warns(UserWarning, match="connected component holds 80%"):
        split = component_split(screen, test_fraction=0.1, seed=3)
    check_split(screen, split)
    assert split.giant_fraction == pytest.approx(0.8)
    assert np.all(split.test_cells >= 400)  # test drawn from the singletons only
    assert split.test_cells.size == 50
    assert split.size_table()["components"].sum() == 101


def test_component_split_small_remainder_warns():
    counts = np.concatenate([np.full(480, 2), np.ones(20, int)])
    seqs = np.concatenate(
        [np.stack([np.zeros(480, int), 1 + np.arange(480)], 1).ravel(), 481 + np.arange(20)]
    )
    screen = make_screen(counts, seqs, 501)
    with pytest.warns(UserWarning) as record:
        split = component_split(screen, test_fraction=0.2, seed=0)
    messages = [str(r.message) for r in record]
    assert any("test set has 20 cells" in m for m in messages)
    assert any("holds 96%" in m for m in messages)
    check_split(screen, split)


def test_component_split_one_component_raises():
    screen = make_screen(
        np.full(50, 2), np.stack([np.zeros(50, int), 1 + np.arange(50)], 1).ravel(), 51
    )
    with pytest.raises(ValueError, match="no component fits"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        component_split(screen, test_fraction=0.1)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_component_split_bad_fraction(frac):
    with pytest.raises(ValueError, match="test_fraction"):
        component_split(random_screen(50, 100, 1.0, 0), test_fraction=frac)


def test_component_split_deterministic():
    screen = random_screen(300, 2000, 1.2, 5)
    a = component_split(screen, 0.1, seed=7)
    b = component_split(screen, 0.1, seed=7)
    assert np.array_equal(a.test_cells, b.test_cells)


def ztp_sample(lam: float, n: int, rng: np.random.Generator) -> np.ndarray:
    out = rng.poisson(lam, size=int(3 * n / -np.expm1(-lam)) + 100)
    out = out[out > 0]
    assert out.size >= n
    return out[:n]


@pytest.mark.parametrize("lam", [0.3, 0.5, 1.0, 1.2, 2.0, 3.0, 5.0])
def test_estimate_moi_recovers_truth(lam):
    rng = np.random.default_rng(int(lam * 100))
    est = estimate_moi(ztp_sample(lam, 20_000, rng))
    assert abs(est.moi - lam) < 3 * est.se


@pytest.mark.parametrize("lam", [0.3, 1.3, 5.0])
def test_estimate_moi_size_biased(lam):
    rng = np.random.default_rng(11)
    n = 1 + rng.poisson(lam, size=20_000)  # sorted cells when hits are rare: size-biased
    est = estimate_moi(n, model="size_biased")
    assert abs(est.moi - lam) < 3 * est.se
    assert estimate_moi(n).moi > lam + 3 * est.se  # the plain ZTP fit is biased upward here
    with pytest.raises(ValueError, match="model"):
        estimate_moi(n, model="other")


def test_estimate_moi_standard_error_matches_spread():
    rng = np.random.default_rng(0)
    ests = [estimate_moi(ztp_sample(1.2, 2000, rng)) for _ in range(200)]
    sd = np.std([e.moi for e in ests], ddof=1)
    se = np.mean([e.se for e in ests])
    # the sd of 200 draws is known to about 1/sqrt(2*199) = 5% relative: allow 4 of those
    assert abs(sd / se - 1) < 0.2


def test_estimate_moi_bad_input():
    with pytest.raises(ValueError, match="no cells"):
        estimate_moi(np.array([], dtype=int))
    with pytest.raises(ValueError, match="zero sequences"):
        estimate_moi(np.array([1, 2, 0, 3]))
    with pytest.raises(ValueError, match="whole numbers"):
        estimate_moi(np.array([1.5, 2.0]))
    assert estimate_moi(torch.tensor([1, 1, 1])).moi == 0.0  # boundary MLE


def ztp_screen(lam: float, n: int, seed: int) -> Screen:
    rng = np.random.default_rng(seed)
    counts = ztp_sample(lam, n, rng)
    return make_screen(counts, np.arange(counts.sum()), int(counts.sum()), n0=2 * n)


@pytest.mark.parametrize(
    ("target", "rule"), [(0.3, "nonempty"), (0.5, "nonempty"), (0.5, "sequences")]
)
def test_subsample_composition(target, rule):
    lam_hat = 1.6
    screen = ztp_screen(lam_hat, 8000, 0)
    idx = subsample_indices(screen.seqs_per_cell(), target, lam_hat, seed=1, hits_rule=rule)
    n = screen.seqs_per_cell().numpy()[idx]
    M = screen.n_sorted
    expect_total = (
        M * np.expm1(-target) / np.expm1(-lam_hat) if rule == "nonempty" else M * target / lam_hat
    )
    bins = np.arange(1, 9)
    expected = expect_total * truncated_poisson_pmf(bins, target)
    observed = np.bincount(n, minlength=9)[1:9]
    assert np.all(np.abs(observed - expected) <= 1.0)  # only rounding separates them
    # and a chi-square test of the composition against TP(n; target) does not reject it
    pooled_exp = np.append(expected[:3], expected[3:].sum() + 1e-9)
    pooled_obs = np.append(observed[:3], n.size - observed[:3].sum())
    keep = pooled_exp > 5
    chi2 = np.sum((pooled_obs[keep] - pooled_exp[keep]) ** 2 / pooled_exp[keep])
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 0.01
    # the MOI estimated from the subsample recovers the target
    est = estimate_moi(n)
    assert abs(est.moi - target) < 3 * est.se


def test_subsample_never_invents_cells():
    screen = ztp_screen(1.2, 3000, 2)
    for seed in range(3):
        sub = subsample_to_moi(screen, 0.8, seed=seed, moi_hat=1.2)
        idx = subsample_indices(screen.seqs_per_cell(), 0.8, 1.2, seed=seed)
        assert np.unique(idx).size == idx.size
        assert idx.min() >= 0 and idx.max() < screen.n_sorted
        assert torch.equal(sub.y, screen.y[torch.from_numpy(idx)])
        assert torch.equal(sub.seqs_per_cell(), screen.seqs_per_cell()[torch.from_numpy(idx)])
        assert sub.moi == 0.8 and sub.n_cells == screen.n_cells
        assert sub.n0 == screen.n_cells - sub.n_sorted
    a = subsample_indices(screen.seqs_per_cell(), 0.8, 1.2, seed=0)
    b = subsample_indices(screen.seqs_per_cell(), 0.8, 1.2, seed=1)
    assert not np.array_equal(a, b)  # repeats differ


def test_subsample_shrinks_when_a_bin_runs_short():
    # near MOI 1, the target asks for more singletons than a MOI-1.2 screen has
    screen = ztp_screen(1.2, 4000, 3)
    n_all = screen.seqs_per_cell().numpy()
    idx = subsample_indices(n_all, 1.0, 1.2, seed=0)
    n = n_all[idx]
    available = np.bincount(n_all)
    assert np.all(np.bincount(n, minlength=available.size) <= available)
    share = np.bincount(n)[1:4] / n.size
    assert np.allclose(share, truncated_poisson_pmf(np.arange(1, 4), 1.0), atol=2e-3)


def test_subsample_ignores_empty_high_bins():
    # size-biased counts with a gap (no cell has 5 sequences) and a long tail must not empty it
    n = np.concatenate(
        [np.ones(300, int), np.full(400, 2), np.full(200, 3), np.full(60, 4), np.full(3, 9)]
    )
    idx = subsample_indices(n, 0.3, 2.0, seed=0)
    expected = n.size * np.expm1(-0.3) / np.expm1(-2.0)
    assert abs(idx.size - expected) <= 2
    share = np.bincount(n[idx], minlength=3)[1:3] / idx.size
    assert np.allclose(share, truncated_poisson_pmf(np.array([1, 2]), 0.3), atol=5e-3)


def test_subsample_bad_input():
    screen = ztp_screen(1.2, 500, 4)
    with pytest.raises(ValueError, match="exceeds"):
        subsample_to_moi(screen, 2.0, moi_hat=1.2)
    with pytest.raises(ValueError, match="target_moi"):
        subsample_to_moi(screen, 0.0, moi_hat=1.2)
    with pytest.raises(ValueError, match="hits_rule"):
        subsample_to_moi(screen, 0.5, moi_hat=1.2, hits_rule="other")
    with pytest.raises(ValueError, match="zero sequences"):
        subsample_indices(np.array([1, 0, 2]), 0.5, 1.2)


def test_clone_pool_repeats_sequences():
    base = EmpiricalLibrary(["CARDW", "CARGW", "CAKDW", "CTRDW"], max_len=8)
    pool = ClonePool(base, 3, torch.Generator().manual_seed(0))
    draws = pool.sample(200, torch.Generator().manual_seed(1))
    assert draws.shape == (200, 8)
    assert len(torch.unique(draws, dim=0)) <= 3  # only the clones are ever delivered
    with pytest.raises(ValueError, match="n_clones"):
        ClonePool(base, 0)


# ----------------------------------------------------------------------------------------------
# boundaries, defaults and messages (messages matched whole: a mangled one fails)
# ----------------------------------------------------------------------------------------------
def test_clone_pool_keeps_its_base_and_is_seeded():
    base = EmpiricalLibrary(["CARDW", "CARGW", "CAKDW", "CAKEW", "CAREW"])
    one = ClonePool(base, n_clones=1)  # a single clone is a valid (degenerate) library
    assert len(one.clones) == 1 and one.base is base and one.max_len == base.max_len
    pools = []
    for global_seed in (1, 2):  # a seeded generator, not the global RNG, decides everything
        torch.manual_seed(global_seed)
        pool = ClonePool(base, 3, generator=torch.Generator().manual_seed(0))
        pools.append((pool.clones, pool.sample(40, torch.Generator().manual_seed(5))))
    assert torch.equal(pools[0][0], pools[1][0]) and torch.equal(pools[0][1], pools[1][1])
    two = ClonePool(base, 2, generator=torch.Generator().manual_seed(0))
    drawn = two.sample(200, torch.Generator().manual_seed(0))
    assert len(torch.unique(drawn, dim=0)) == 2  # both clones, the first included
    assert torch.equal(two.log_prob(two.clones), base.log_prob(two.clones))


def test_component_split_target_equal_to_a_component_and_the_apportioned_counts():
    # ten singleton cells: test_fraction 0.1 asks for exactly one cell, a component of size 1
    screen = make_screen(np.ones(10), np.arange(10), 10, n0=30)
    split = component_split(screen, 0.1)
    assert split.test_cells.size == 1 and split.train_cells.size == 9
    assert (split.train.n0, split.train.n_cells) == (27, 36)  # 30 * 9/10 unsorted, + 9 sorted
    assert (split.test.n0, split.test.n_cells) == (3, 4)
    table = split.size_table()
    assert list(table.columns) == ["cells per component", "components"]
    assert table.values.tolist() == [[1, 10]]
    # the defaults: test_fraction 0.1 and seed 0
    again = component_split(screen)
    assert np.array_equal(again.test_cells, component_split(screen, 0.1, seed=0).test_cells)


def test_component_split_warnings_name_the_problem():
    # one component of 6 cells (sequence 0 shared) and 4 singletons: the giant holds 60%
    screen = make_screen(np.ones(10), [0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 5)
    with pytest.warns(UserWarning, match="test set comes from the smaller components$"):
        component_split(screen, 0.2, giant_warn=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        component_split(screen, 0.2, giant_warn=0.6)  # exactly at the threshold: no warning
    # 2 singletons of 10 cells, a target of 4: exactly half the target is not "under half"
    half = make_screen(np.ones(10), [0, 0, 0, 0, 0, 0, 0, 0, 1, 2], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        component_split(half, 0.4, giant_warn=0.9)
    with pytest.warns(UserWarning, match="outside the largest components$"):
        component_split(half, 0.5, giant_warn=0.9)  # 2 of a target of 5


def test_component_split_error_messages():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        component_split(make_screen(np.ones(4), np.arange(4), 4), 0.0)
    empty = make_screen(np.zeros(0), np.zeros(0, int), 4, n0=5)
    with pytest.raises(ValueError, match="^the screen has no sorted cells to split$"):
        component_split(empty, 0.5)
    with pytest.raises(ValueError, match="no component fits"):
        component_split(make_screen(np.ones(1), [0], 1), 0.5)  # one cell is not "no cells"


def test_estimate_moi_fields_and_messages():
    n = np.array([1, 1, 2, 3, 5])
    for model in ("ztp", "size_biased"):
        est = estimate_moi(n, model=model)
        assert (est.n_cells, est.mean_seqs) == (5, 2.4)
    ones = estimate_moi(np.ones(4))
    assert (ones.moi, ones.se, ones.n_cells, ones.mean_seqs) == (0.0, np.inf, 4, 1.0)
    boundary = estimate_moi(np.ones(4), model="size_biased")  # lam = 0: se from a 1e-12 floor
    assert boundary.moi == 0.0 and boundary.se == pytest.approx(np.sqrt(1e-12 / 4))
    for bad, message in [
        (np.array([], dtype=int), "^no cells given: pass the sequence counts of the sequenced cells$"),
        (np.array([1.5, 2.0]), "^sequence counts must be whole numbers$"),
        (np.array([0, 2]), r"^cells with zero sequences found: the zero-truncated model takes sequenced cells "
         r"only \(every one has >= 1 sequence\); drop the empty ones$"),
    ]:
        with pytest.raises(ValueError, match=message):
            estimate_moi(bad)


def test_truncated_poisson_pmf_is_zero_below_one():
    assert truncated_poisson_pmf(np.array([0, -1, -3]), 1.3).tolist() == [0.0, 0.0, 0.0]


def test_subsample_checks_at_their_boundaries():
    assert subsample_indices(np.array([3]), 0.1, 0.5).size <= 1  # a single cell is a sample
    n = np.repeat([1, 2, 3], [60, 30, 10])
    subsample_indices(n, 0.4, 0.5)  # an MOI under 1 is an MOI
    subsample_indices(n, 0.5, 0.5)  # target equal to the screen's MOI is allowed
    for moi_hat in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="moi_hat must be > 0"):
            subsample_indices(n, 0.1, moi_hat)
    for args, message in [
        ((np.array([], dtype=int), 0.1, 1.0), "^no cells to subsample$"),
        ((np.array([0, 1]), 0.1, 1.0), "^cells with zero sequences found: subsample sequenced cells only$"),
        ((n, 2.0, 1.0), "exceeds the screen's MOI 1: subsampling can only lower the MOI$"),
    ]:
        with pytest.raises(ValueError, match=message):
            subsample_indices(*args)
    assert np.array_equal(subsample_indices(n, 0.3, 1.2), subsample_indices(n, 0.3, 1.2, seed=0))


@pytest.mark.parametrize("target, kept_pairs", [(1.0, 5), (1.1, 6)])
def test_subsample_short_bin_sets_the_largest_total_that_fits(target, kept_pairs):
    # 10 singletons, 100 pairs: at target lam' the singletons run short, so the total M' is
    # the largest with round(M' TP(1)) <= 10, i.e. M' TP(1) < 10.5, and the pairs get
    # round(M' TP(2)) = round(10.5 TP(2)/TP(1) - eps) = round(10.5 lam'/2 - eps) cells
    n = np.repeat([1, 2], [10, 100])
    idx = subsample_indices(n, target, 2.0, hits_rule="sequences")
    assert (n[idx] == 1).sum() == 10
    assert (n[idx] == 2).sum() == kept_pairs == round(10.5 * target / 2 - 1e-9)


def test_subsample_to_moi_counts_and_default_estimate():
    # 3 singletons and 1 pair at lam' = lam_hat = 0.3: round(4 TP(1; 0.3)) = 3 and
    # round(4 TP(2; 0.3)) = 1 (scipy below), so every cell is kept and none is unsorted
    tp = stats.poisson.pmf([1, 2], 0.3) / (1 - np.exp(-0.3))
    assert np.round(4 * tp).tolist() == [3.0, 1.0]
    screen = make_screen(np.array([1, 1, 1, 2]), [0, 1, 2, 3, 4], 5, n0=0)
    full = subsample_to_moi(screen, 0.3, moi_hat=0.3)
    assert (full.n_sorted, full.n0, full.n_cells, full.moi) == (4, 0, 4, 0.3)
    big = random_screen(400, 5000, 1.5, seed=0)
    low = subsample_to_moi(big, 0.5)  # moi_hat defaults to the ZTP estimate of the screen
    ref = subsample_to_moi(big, 0.5, seed=0, moi_hat=estimate_moi(big.seqs_per_cell()).moi)
    assert torch.equal(low.y, ref.y)
    assert low.n_cells == big.n_cells and low.n0 == big.n_cells - low.n_sorted

"""Tests of liftkit.lift.theory: coherence (LIFT Def 5.3, Prop 5.5), Prop 5.2 and LeaVS (App. D).

Equation numbers are those of the book's Derivations appendix (book/derivations.md).
"""

from __future__ import annotations

import doctest
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift import theory


@pytest.mark.parametrize("K", [1, 7, 100, 10_000])
def test_coherence_individual_is_K(K):
    assert theory.coherence_individual(K) == K


@pytest.mark.parametrize(
    ("K", "moi", "ref"),
    # computed independently of liftkit; listed in book/derivations.md (proof of Prop 5.5, m = 1e4)
    [(100, 100, 100), (1000, 10, 1592), (100, 1, 894), (1000, 1000, 121), (10_000, 1e4, 169)],
)
def test_coherence_exact_matches_notes_table(K, moi, ref):
    assert theory.coherence_exact(K, moi, 1e4) == pytest.approx(ref, rel=0.005)


def test_coherence_exact_small_moi_closed_form():
    # for moi << K the answer is j^2 K / moi with (j - nu)^2 / nu exactly: K=1000, moi=10, j=4
    nu = 10 / 1000
    assert theory.coherence_exact(1000, 10, 1e4) == pytest.approx((4 - nu) ** 2 / nu, rel=1e-12)


def _conditions(K, moi, m, mu):
    """Left sides of eqs. 14-15 from scipy's Poisson pmf, independently of the module's sums."""
    nu = moi / K
    lo, hi = nu - np.sqrt(mu * nu), nu + np.sqrt(mu * nu)
    n = np.arange(0, int(nu + 60 * np.sqrt(nu) + 80))
    pmf = stats.poisson.pmf(n, nu)
    inside = (n >= lo - 1e-9) & (n <= hi + 1e-9)
    q = pmf[inside].sum()
    s = (pmf * (n - nu) ** 2 / nu)[inside].sum()
    return 1 - s * q ** (K - 1), 1 - q**K


@pytest.mark.parametrize(("K", "moi", "m"), [(20, 5, 100), (100, 30, 1e3), (50, 500, 10)])
def test_coherence_exact_is_smallest_feasible(K, moi, m):
    mu = theory.coherence_exact(K, moi, m)
    c14, c15 = _conditions(K, moi, m, mu)
    assert c14 <= 1 / (20 * K**1.5) * (1 + 1e-6) and c15 <= 1 / (m * K) * (1 + 1e-6)
    c14b, c15b = _conditions(K, moi, m, mu * (1 - 1e-6))  # just below fails one condition
    assert c14b > 1 / (20 * K**1.5) or c15b > 1 / (m * K)


@pytest.mark.parametrize("K", [10, 100, 1000, 10_000])
@pytest.mark.parametrize("moi", [0.1, 1.0, 10.0, 100.0, 1e4, 1e5])
def test_bound_at_least_exact(K, moi):
    assert theory.coherence_bound(K, moi, 1e4) >= theory.coherence_exact(K, moi, 1e4)


def test_bound_matches_notes_table():
    assert theory.coherence_bound(100, 100, 1e4) == pytest.approx(1.0e4, rel=0.02)
    assert theory.coherence_bound(1000, 10, 1e4) == pytest.approx(5.7e5, rel=0.02)


@pytest.mark.parametrize(("K", "moi", "m", "first_wins"), [(3, 1.0, 1e6, True), (100, 100.0, 1e4, False)])
def test_bound_by_hand_in_both_branches(K, moi, m, first_wins):
    """Eq. 17 by hand: (1 + sqrt(K/moi))^2 max(4 log^2(2 m K^2),
    16 log^2(20 sqrt(2) K sqrt(K^2 + 2K + K^2/moi))); m >> K^2 makes the first term win."""
    first = 4.0 * math.log(2.0 * m * K * K) ** 2
    second = 16.0 * math.log(20.0 * math.sqrt(2.0) * K * math.sqrt(K * K + 2 * K + K * K / moi)) ** 2
    assert (first > second) is first_wins
    expected = (1.0 + math.sqrt(K / moi)) ** 2 * max(first, second)
    assert theory.coherence_bound(K, moi, m) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("K", "moi", "seed"), [(10, 3.0, 0), (10, 30.0, 1), (20, 1.0, 2)])
def test_coherence_mc_within_error_of_exact(K, moi, seed):
    exact = theory.coherence_exact(K, moi, 10)
    mc = theory.coherence_mc(K, moi, 10, n_samples=100_000, seed=seed)
    assert mc.lower <= exact <= mc.upper


def test_coherence_mc_refuses_unresolvable_tail():
    with pytest.raises(ValueError, match="n_samples"):
        theory.coherence_mc(100, 10, 1e4, n_samples=1000)


@pytest.mark.parametrize(
    "bad", [dict(K=0, moi=1, m=1), dict(K=10, moi=0, m=1), dict(K=10, moi=1, m=0)]
)
def test_coherence_bad_input(bad):
    with pytest.raises(ValueError):
        theory.coherence_exact(**bad)


def test_region_counts_independent_poisson():
    """Prop 5.2 / eqs. 10, 20: counts from points are independent Poisson(moi w_k)."""
    K, moi, m = 6, 4.0, 20_000
    w = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.3])
    cell, region = theory.simulate_points(w, moi, m, seed=3)
    n = theory.region_counts(cell, region, m, K)
    assert n.sum() == cell.size
    lam = moi * w
    # means within 4 standard errors of the Poisson mean; variance/mean near 1
    assert np.all(np.abs(n.mean(0) - lam) < 4 * np.sqrt(lam / m))
    assert np.all(np.abs(n.var(0) / lam - 1) < 4 * np.sqrt(2 / m) + 4 * np.sqrt(1 / (lam * m)))
    corr = np.corrcoef(n.T)[np.triu_indices(K, 1)]
    assert np.abs(corr).max() < 4.5 / np.sqrt(m)  # independent: |r| ~ N(0, 1/m)


def test_region_counts_checks_labels():
    with pytest.raises(ValueError):
        theory.region_counts(np.array([0, 5]), np.array([0, 1]), m=3, K=2)


def test_map_on_points_equals_reduced_lasso():
    """Prop 5.2 / eqs. 12, 22: functional MAP on points == scikit-learn LASSO on w * beta."""
    rng = np.random.default_rng(0)
    K, moi, m, sigma, gamma = 8, 3.0, 1500, 0.5, 150.0
    w = rng.dirichlet(np.full(K, 3.0))
    cell, region = theory.simulate_points(w, moi, m, seed=1)
    n = theory.region_counts(cell, region, m, K)
    beta = np.zeros(K)
    beta[[1, 4]] = [2.0, -1.5]
    y = n @ beta + sigma * rng.standard_normal(m)
    b_points = theory.fit_map_points(cell, region, y, w, gamma, sigma)
    b_lasso = theory.fit_lasso_reduced(n, y, w, gamma, sigma)
    assert np.max(np.abs(b_points - b_lasso)) < 1e-6
    assert np.max(np.abs(b_points - beta)) < 0.2  # and it learned beta
    assert (b_points == 0).sum() >= 1  # the L1 penalty sets some coordinates exactly to zero


def test_bad_w():
    with pytest.raises(ValueError, match="w must"):
        theory.simulate_points(np.array([0.5, 0.6]), 1.0, 10)


def test_leavs_identity():
    """Eq. 38 exact vs simulation (eq. 36); Jensen (eq. 37): exact >= -moi ||f||_1; eq. 39."""
    w = np.array([0.5, 0.3, 0.2])
    beta = np.array([0.0, 1.0, 2.5])
    exact = theory.log_p0_exact(beta, w, 2.0)
    linear = theory.log_p0_linear(beta, w, 2.0)
    est, se = theory.log_p0_mc(beta, w, 2.0, n_cells=100_000, seed=0)
    assert abs(est - exact) < 4 * se
    assert exact >= linear
    # closed form by hand: -moi * sum_k w_k (1 - exp(-beta_k))
    assert exact == pytest.approx(-2.0 * (0.3 * (1 - np.exp(-1.0)) + 0.2 * (1 - np.exp(-2.5))))
    small = 1e-4 * beta
    assert theory.log_p0_exact(small, w, 2.0) == pytest.approx(
        theory.log_p0_linear(small, w, 2.0), rel=1e-3
    )
    with pytest.raises(ValueError):
        theory.log_p0_exact(-beta, w, 2.0)


def test_recovery_improves_with_moi():
    """Prop 5.4: lower coherence (higher MOI, moi <= K) gives smaller LASSO error at fixed m."""
    df = theory.recovery_experiment(K=100, s=4, mois=[1.0, 100.0], ms=[150], n_reps=4, seed=0)
    err = df[df.design == "Poisson"].groupby("moi").rel_error.mean()
    assert err[100.0] < 0.6 * err[1.0]
    assert err[100.0] < 0.5  # it learned: the zero estimate has error 1


def test_m_needed_interpolates():
    m = np.array([100, 200, 400])
    e = np.array([0.8, 0.4, 0.2])
    assert theory.m_needed(m, e, 0.4) == pytest.approx(200)
    assert theory.m_needed(m, e, 0.1) == float("inf")
    assert 200 < theory.m_needed(m, e, 0.3) < 400


def test_docstring_examples_run():
    result = doctest.testmod(theory, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_derivations_appendix_numbers_equations_as_the_paper(root):
    """Sphinx numbers a page's labelled equations 1, 2, ... in order, so the labels
    eq-lift-1 ... eq-lift-39 must appear exactly once each, in order, for the printed number of
    every equation of book/derivations.md to be the paper's (which docstrings cite)."""
    text = (root / "book" / "derivations.md").read_text()
    labels = re.findall(r"^\$\$ \(([^)]+)\)\s*$|^:label: (\S+)", text, flags=re.M)
    labels = [a or b for a, b in labels]
    assert labels == [f"eq-lift-{n}" for n in range(1, 40)]


def test_simulated_a_stats_by_hand_and_chunk_independent():
    """max_k a_k^2 and K^-1 ||a||^2 of eq. 23 from the same seeded Poisson draws, by hand; the
    chunking (here 2 rows at a time) draws the same stream, whatever the global RNG."""
    K, nu, n = 3, 2.0, 11
    draws = torch.poisson(
        torch.full((n, K), nu, dtype=torch.float64), generator=torch.Generator().manual_seed(4)
    ).numpy()
    a2 = (draws - nu) ** 2 / nu
    for chunk in (2**22, 2 * K):
        torch.manual_seed(chunk)  # the global RNG must not matter
        max_a2, norm_a2 = theory._simulate_a_stats(K, nu, n, 4, "cpu", chunk)
        np.testing.assert_array_equal(max_a2, a2.max(1))
        np.testing.assert_allclose(norm_a2, a2.sum(1) / K, rtol=1e-15)


def test_empirical_coherence_by_hand():
    """Four simulated vectors with max a^2 = 1..4 and K^-1||a||^2 = 0.1..0.4. At a candidate
    mu the empirical P(E^c) is the share of vectors with max a^2 > mu and the eq. 14 side is
    their summed norm over 4: mu = 3 gives (1/4, 0.1); mu = 4 gives (0, 0)."""
    max_a2 = np.array([3.0, 1.0, 4.0, 2.0])
    norm_a2 = np.array([0.3, 0.1, 0.4, 0.2])
    loose = theory._empirical_coherence(max_a2, norm_a2, 1, t14=0.5, t15=0.3, z=0.0)
    assert (loose.mu, loose.lower, loose.upper, loose.n_samples) == (3.0, 3.0, 3.0, 4)
    strict = theory._empirical_coherence(max_a2, norm_a2, 1, t14=0.05, t15=0.1, z=0.0)
    assert strict.mu == 4.0  # only the largest candidate has an empty tail
    none = theory._empirical_coherence(max_a2, norm_a2, 1, t14=-1.0, t15=0.1, z=0.0)
    assert none.mu == np.inf


def test_thresholds_of_eqs_14_and_15():
    assert theory._thresholds(4, 10) == (1.0 / (20.0 * 8.0), 1.0 / 40.0)


def test_empirical_coherence_at_exact_thresholds():
    # mu = 3 has P(E^c) = 1/4 and an eq. 14 side of 0.4 / 4 = 0.1, both exactly at threshold
    max_a2 = np.array([3.0, 1.0, 4.0, 2.0])
    norm_a2 = np.array([0.3, 0.1, 0.4, 0.2])
    assert theory._empirical_coherence(max_a2, norm_a2, 1, t14=0.1, t15=0.25, z=0.0).mu == 3.0


def _coherence_loop(max_a2, norm_a2, K, t14, t15, z):
    """Def 5.3 on a sample, one candidate at a time: P(E^c) and E[K^-1||a||^2 1{E^c}] as tail
    shares and tail sums, standard errors floored at one event's worth."""
    n = max_a2.size
    out = {"mu": np.inf, "lower": np.inf, "upper": np.inf}
    for c in sorted(set(max_a2.tolist())):
        tail = max_a2 > c
        p = tail.sum() / n
        e = norm_a2[tail].sum() / n
        var = max((norm_a2[tail] ** 2).sum() / n - e * e, 0.0)
        se_p = math.sqrt(max(p, 1.0 / n) * (1.0 - p) / n)
        se_e = math.sqrt(max(var, (1.0 + c / K) ** 2 / n) / n)
        for key, sign in (("mu", 0.0), ("lower", -1.0), ("upper", 1.0)):
            ok = p + sign * z * se_p <= t15 and e + sign * z * se_e <= t14
            if ok and out[key] == np.inf:
                out[key] = c
    return out


@pytest.mark.parametrize(
    ("t14", "t15", "z", "scale"),
    [
        (2.0, 0.2, 1.0, 1.0), (6.0, 0.3, 0.5, 1.0), (1.0, 0.1, 2.0, 1.0),
        (1e9, 0.2, 1.0, 1.0),  # eq. 15 decides
        (3.0, 2.0, 1.0, 1.0),  # eq. 14 decides, its sd from the sample
        (0.02, 2.0, 1.0, 0.001),  # eq. 14 decides, its sd at the floor
    ],
)
def test_empirical_coherence_interval_against_a_loop(t14, t15, z, scale):
    rng = np.random.default_rng(0)
    max_a2 = np.round(rng.uniform(0.0, 50.0, 60), 1)
    norm_a2 = max_a2 * rng.uniform(0.2, 1.0, 60) * scale
    got = theory._empirical_coherence(max_a2, norm_a2, 5, t14, t15, z)
    want = _coherence_loop(max_a2, norm_a2, 5, t14, t15, z)
    assert want["lower"] < want["upper"]  # the interval has width
    assert (got.lower, got.mu, got.upper) == pytest.approx((want["lower"], want["mu"], want["upper"]))


def _coherence_by_enumeration(K, moi, m):
    """Def 5.3 for the Poisson design, one candidate mu at a time (scipy pmf, no suffix sums):
    q = P(a_1^2 <= mu), s = E[a_1^2 1{a_1^2 <= mu}], P(E^c) = 1 - q^K (eq. 15) and
    E[K^-1 ||a||^2 1{E^c}] = 1 - s q^(K-1) (eq. 14, as E[a_1^2] = 1)."""
    nu = moi / K
    n = np.arange(0, int(nu + 60 * np.sqrt(nu) + 80))
    pmf, a2 = stats.poisson.pmf(n, nu), (n - nu) ** 2 / nu
    t14, t15 = 1.0 / (20.0 * K**1.5), 1.0 / (m * K)
    only15 = None
    for mu in np.unique(a2):
        inside = a2 <= mu
        out_p = math.fsum(pmf[~inside])
        s = 1.0 - math.fsum(pmf[~inside] * a2[~inside])
        p15 = -math.expm1(K * math.log1p(-out_p))
        side14 = 1.0 - s * math.exp((K - 1) * math.log1p(-out_p))
        if p15 <= t15 and only15 is None:
            only15 = float(mu)
        if p15 <= t15 and side14 <= t14:
            return float(mu), only15
    raise AssertionError("grid too small")


@pytest.mark.parametrize(
    ("K", "moi", "m"), [(10, 3.0, 1), (5, 20.0, 2), (30, 1.0, 1e3), (5, 1.0, 1), (5, 30.0, 1)]
)
def test_coherence_exact_against_enumeration(K, moi, m):
    mu, mu_eq15_only = _coherence_by_enumeration(K, moi, m)
    assert theory.coherence_exact(K, moi, m) == pytest.approx(mu, rel=1e-12)
    if m < 10:  # a small m makes eq. 15 loose, so eq. 14 decides
        assert mu > mu_eq15_only


def test_coherence_mc_defaults_and_sample_floor():
    # K = 2, m = 1: t14 = 1 / (20 * 2^1.5) is the smaller threshold; need = ceil(20 / t14) = 1132
    need = math.ceil(20.0 * 20.0 * 2**1.5)
    assert need == 1132
    theory.coherence_mc(2, 1.0, 1, n_samples=need)
    with pytest.raises(ValueError, match="use at least 1132 samples"):
        theory.coherence_mc(2, 1.0, 1, n_samples=need - 1)
    assert theory.coherence_mc(2, 1.0, 1) == theory.coherence_mc(
        2, 1.0, 1, n_samples=200_000, seed=0, z=3.0
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0, 1.0), r"K \(number of regions\) must be a positive integer, got 0"),
        ((2.5, 1.0, 1.0), r"K \(number of regions\) must be a positive integer, got 2.5"),
        ((4, 0.0, 1.0), "moi must be a positive finite number, got 0.0"),
        ((4, 1.0, 0.5), r"m \(number of measurements\) must be >= 1, got 0.5"),
    ],
)
def test_design_checks_name_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        theory.coherence_exact(*args)


def test_log_p0_errors_name_the_problem():
    """eq. 38 needs f >= 0; a simulation without a single y = 0 cell has no log-estimate."""
    w = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match=r"^eq\. 38 needs f >= 0: pass non-negative beta$"):
        theory.log_p0_exact(np.array([-1.0, 0.0]), w, 2.0)
    # MOI 30: P(a cell has no molecule) = exp(-30) ~ 1e-13, and f = 50 makes y = 0 impossible else
    message = r"^no simulated cell had y = 0: use more cells or a smaller f$"
    with pytest.raises(ValueError, match=message):
        theory.log_p0_mc(np.array([50.0, 50.0]), w, 30.0, n_cells=200)


def test_log_p0_mc_edge_cases_by_hand():
    """f = 0 gives y = 0 in every cell (log 1 = 0, no error); at MOI 1e-3 five cells hold no
    molecule with probability 0.995, so the estimate is exactly 0 over all five cells."""
    w = np.array([0.5, 0.5])
    assert theory.log_p0_mc(np.zeros(2), w, 2.0, n_cells=100) == (0.0, 0.0)
    assert theory.log_p0_mc(np.array([50.0, 50.0]), w, 1e-3, n_cells=5) == (0.0, 0.0)


def test_log_p0_mc_is_seeded():
    """Same seed, same estimate; the default seed is 0; another seed gives other draws."""
    beta, w = np.array([0.0, 1.0, 2.5]), np.array([0.5, 0.3, 0.2])
    first = theory.log_p0_mc(beta, w, 2.0, n_cells=2000, seed=3)
    assert theory.log_p0_mc(beta, w, 2.0, n_cells=2000, seed=3) == first
    assert theory.log_p0_mc(beta, w, 2.0, n_cells=2000) == theory.log_p0_mc(
        beta, w, 2.0, n_cells=2000, seed=0)
    assert theory.log_p0_mc(beta, w, 2.0, n_cells=2000, seed=4) != first


def test_m_needed_at_the_ends_and_on_a_plateau():
    """By hand: a curve already below the target needs its first m; on a plateau at the target
    the first m that reaches it (<=, not <) is the answer, with no interpolation past it."""
    m = np.array([100, 200, 400, 800])
    assert theory.m_needed(m[:3], np.array([0.8, 0.4, 0.2]), 0.9) == 100.0
    assert theory.m_needed(m, np.array([0.5, 0.4, 0.4, 0.2]), 0.4) == pytest.approx(200.0)
    # log-log interpolation by hand: halfway in log error between 0.8 and 0.2 is 0.4, at m = 200
    assert theory.m_needed(m[[0, 2]], np.array([0.8, 0.2]), 0.4) == pytest.approx(200.0)


W_MESSAGE = "w must be a 1-D vector of positive region masses summing to 1"


@pytest.mark.parametrize(
    "w",
    [[1.5, -0.5], [1.0, 0.0], [[0.5, 0.5]], [0.5, 0.6], []],
    ids=["negative-mass", "zero-mass", "2-D", "sum-not-1", "empty"],
)
def test_region_masses_are_checked(w):
    """Each clause of the check of w on its own: a negative or a zero mass (the others summing to
    1), a 2-D array, a sum other than 1, no region at all."""
    with pytest.raises(ValueError, match=f"^{re.escape(W_MESSAGE)}$"):
        theory.simulate_points(np.array(w), 1.0, 10)


def test_a_single_region_is_a_valid_design():
    """K = 1 (w = [1]) passes the checks: every sequence falls in region 0, every cell's count
    is its number of sequences."""
    cell, region = theory.simulate_points(np.array([1.0]), 2.0, 5, seed=0)
    assert (region == 0).all()
    n = theory.region_counts(cell, region, 5, 1)
    np.testing.assert_array_equal(n[:, 0], np.bincount(cell, minlength=5))


def test_simulate_points_is_seeded():
    """Same seed, same points; the default seed is 0; another seed gives other draws."""
    w = np.array([0.2, 0.3, 0.5])
    first = theory.simulate_points(w, 3.0, 50, seed=7)
    again = theory.simulate_points(w, 3.0, 50, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    default = theory.simulate_points(w, 3.0, 50)
    zero = theory.simulate_points(w, 3.0, 50, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(default, zero, strict=True))
    other = theory.simulate_points(w, 3.0, 50, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(zero, other, strict=True))


LABELS = "cell labels must lie in [0, m) and region labels in [0, K)"
LENGTHS = "cell and region must have the same length (one entry per sequence)"


@pytest.mark.parametrize(
    ("cell", "region", "message"),
    [
        ([0, 1], [0], LENGTHS),
        ([-1, 0], [0, 0], LABELS),  # a negative cell alone
        ([0, 3], [0, 1], LABELS),  # cell == m alone
        ([0, 0], [-1, 0], LABELS),  # a negative region alone
        ([0, 0], [0, 2], LABELS),  # region == K alone
    ],
)
def test_region_counts_checks_each_label_bound(cell, region, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        theory.region_counts(np.array(cell), np.array(region), m=3, K=2)


def test_region_counts_at_the_largest_labels_by_hand():
    """Labels m - 1 and K - 1 are valid: one sequence of cell 2 in region 1, two of cell 0 in
    region 0, m = 3, K = 2."""
    n = theory.region_counts(np.array([2, 0, 0]), np.array([1, 0, 0]), m=3, K=2)
    np.testing.assert_array_equal(n, [[2, 0], [0, 0], [0, 1]])


def test_map_one_step_on_an_orthogonal_design():
    """n = diag(2, 2, 0) (cell 2 and region 2 hold no sequence), sigma = 2. The data term
    separates and has curvature exactly L = ||n||_2^2 / sigma^2 = 1 per region, so one proximal
    gradient step of size 1/L from 0 lands on the minimiser, by hand
    beta_k = soft(y_k / 2, gamma w_k sigma^2 / 4) = soft(y_k / 2, w_k): soft(1.5, 0.2) = 1.3,
    soft(-0.2, 0.3) = 0, and 0 for the empty region (eqs. 18, 22)."""
    cell, region = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    y, w = np.array([3.0, -0.4, 5.0]), np.array([0.2, 0.3, 0.5])
    want = np.array([1.3, 0.0, 0.0])
    one = theory.fit_map_points(cell, region, y, w, gamma=1.0, sigma=2.0, n_iter=1)
    np.testing.assert_allclose(one, want, rtol=0, atol=1e-12)
    full = theory.fit_map_points(cell, region, y, w, gamma=1.0, sigma=2.0)
    np.testing.assert_allclose(full, want, rtol=0, atol=1e-12)


def test_map_without_sequences_is_zero():
    """No cell holds a sequence: the data term does not depend on beta, the L1 term is smallest
    at 0, so the MAP is K zeros."""
    empty = np.array([], dtype=int)
    beta = theory.fit_map_points(empty, empty, np.array([1.0, 2.0]), np.array([0.5, 0.5]), 1.0)
    np.testing.assert_array_equal(beta, np.zeros(2))


def test_map_and_lasso_on_an_ill_conditioned_design_by_hand():
    """n = [[50, 49], [49, 50]] (singular values 99 and 1), y = n [1, -1], w = [1/2, 1/2],
    gamma = sigma = 1. [1, -1] is an eigenvector of n with eigenvalue 1, so the KKT condition
    n^T (n b - y) + gamma w sign(b) = 0 gives b* = [1, -1] - 0.5 [1, -1] = [0.5, -0.5], with
    F* = 0.5 ||0.5 n [1, -1]||^2 + 0.5 = 0.75. FISTA's guarantee (Beck and Teboulle 2009, thm 4.4)
    F(b_k) - F* <= 2 L ||b*||^2 / (k + 1)^2, L = 99^2, holds at every k; the scikit-learn LASSO
    of eq. 12 reaches b* to solver precision."""
    c = 50
    n = np.array([[c, c - 1], [c - 1, c]])
    cell = np.repeat([0, 0, 1, 1], n.ravel())
    region = np.repeat([0, 1, 0, 1], n.ravel())
    y, w = n @ np.array([1.0, -1.0]), np.array([0.5, 0.5])
    b_star = np.array([0.5, -0.5])

    def objective(b):
        return 0.5 * ((y - n @ b) ** 2).sum() + (w * np.abs(b)).sum()

    assert objective(b_star) == pytest.approx(0.75, rel=1e-12)
    for k in (10, 30, 100, 300, 1000):
        b_k = theory.fit_map_points(cell, region, y, w, gamma=1.0, n_iter=k)
        assert objective(b_k) - 0.75 <= 2 * 99**2 * 0.5 / (k + 1) ** 2
    np.testing.assert_allclose(theory.fit_lasso_reduced(n, y, w, gamma=1.0), b_star, atol=1e-9)


def test_lasso_rel_error_by_hand_on_a_correlated_design():
    """A = [[20, 19], [19, 20]], theta = [1, -1], y = A theta (no noise), alpha = 0.1, m = 2.
    scikit-learn's objective ||y - A t||^2 / (2m) + alpha ||t||_1 without intercept has the KKT
    condition A^T A (t - theta) = -m alpha sign(t); [1, -1] is an eigenvector of A^T A with
    eigenvalue 1, so t = 0.8 [1, -1] and the relative error is 0.2."""
    A = np.array([[20.0, 19.0], [19.0, 20.0]])
    theta = np.array([1.0, -1.0])
    assert theory._lasso_rel_error(A, A @ theta, theta, 0.1) == pytest.approx(0.2, abs=2e-5)


def test_standardized_design_rows():
    """Eq. 23: a_k = (n_k - nu) / sqrt(nu) with n_k ~ Poisson(nu), nu = moi / K: the values lie
    on that lattice, and the columns have mean 0 and variance 1 (within 4 standard errors).
    Individual testing: one entry sqrt(K) per row, so ||a||^2 = K."""
    K, moi, m = 5, 3.5, 20_000
    nu = moi / K
    A = theory.standardized_design(K, moi, m, np.random.default_rng(0))
    counts = A * np.sqrt(nu) + nu
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    assert counts.min() >= -1e-9
    assert np.abs(A.mean(0)).max() < 4 / np.sqrt(m)
    # var of a_k^2 is 2 + 1 / nu for a standardised Poisson
    assert np.abs(A.var(0) - 1).max() < 4 * np.sqrt((2 + 1 / nu) / m)
    ind = theory.standardized_design(K, None, 50, np.random.default_rng(0))
    assert ((ind != 0).sum(1) == 1).all()
    np.testing.assert_allclose((ind**2).sum(1), K)


def test_recovery_experiment_draws_what_it_documents(monkeypatch):
    """theta has exactly s entries +-1 with both signs (here s = K = 8, where drawing positions
    with replacement would repeat some), the noise is sigma times iid standard normals, alpha is
    alpha_scale sigma sqrt(2 log K / m), and each row of the table is one fit, in order."""
    calls = []
    real = theory._lasso_rel_error

    def spy(A, y, theta, alpha):
        calls.append((A, y, theta.copy(), alpha, real(A, y, theta, alpha)))
        return calls[-1][-1]

    monkeypatch.setattr(theory, "_lasso_rel_error", spy)
    K, sigma, scale, ms = 8, 0.5, 1.7, [200, 300]
    df = theory.recovery_experiment(
        K, K, [4.0], ms, n_reps=3, sigma=sigma, alpha_scale=scale, seed=2
    )
    assert list(df.columns) == ["design", "moi", "m", "rep", "rel_error"]
    assert len(calls) == len(df) == 3 * 2 * 2
    for (A, y, theta, alpha, err), row in zip(calls, df.itertuples(), strict=True):
        assert sorted(np.abs(theta)) == [1.0] * K and {-1.0, 1.0} <= set(theta)
        noise = y - A @ theta
        assert abs(noise.std() / sigma - 1) < 4 / np.sqrt(2 * row.m)
        assert alpha == pytest.approx(scale * sigma * np.sqrt(2 * np.log(K) / row.m), rel=1e-12)
        assert row.rel_error == err and A.shape == (row.m, K)
    assert list(df.design) == (["Poisson"] * 2 + ["individual"] * 2) * 3
    assert list(df.m) == ms * 6 and list(df.rep) == [0] * 4 + [1] * 4 + [2] * 4
    assert df.moi.isna().tolist() == [False, False, True, True] * 3


def test_recovery_experiment_options_and_seed():
    """include_individual=False runs the Poisson designs only; the default seed is 0; the same
    seed repeats the table and another seed does not."""
    kw = dict(K=10, s=2, mois=[5.0], ms=[40], n_reps=2)
    only = theory.recovery_experiment(**kw, include_individual=False)
    assert set(only.design) == {"Poisson"} and len(only) == 2
    default = theory.recovery_experiment(**kw)
    assert default.equals(theory.recovery_experiment(**kw, seed=0))
    assert default.equals(theory.recovery_experiment(**kw))
    assert not default.equals(theory.recovery_experiment(**kw, seed=1))


@pytest.mark.parametrize("s", [0, 11])
def test_recovery_experiment_rejects_sparsity_outside_1_to_K(s):
    message = f"sparsity s must be in [1, K], got s={s}, K=10"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        theory.recovery_experiment(K=10, s=s, mois=[5.0], ms=[20], n_reps=1)


@pytest.mark.parametrize("s", [1, 10])
def test_recovery_experiment_accepts_sparsity_1_and_K(s):
    df = theory.recovery_experiment(K=10, s=s, mois=[5.0], ms=[20], n_reps=1)
    assert len(df) == 2 and np.isfinite(df.rel_error).all()


def test_masses_accepted_by_the_check_are_accepted_by_the_simulation():
    """_check_w accepts sums within np.isclose of 1; numpy's choice demands far less: a float32
    w and a w off by 1e-7 must simulate as the same masses renormalised, not raise."""
    for w in (np.array([0.5, 0.5 + 1e-7]), np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)):
        cell, region = theory.simulate_points(w, 3.0, 2000, seed=0)
        freq = np.bincount(region, minlength=w.size) / region.size
        se = np.sqrt(w * (1 - w) / region.size)
        assert (np.abs(freq - w) < 4 * se).all()
        est, _ = theory.log_p0_mc(np.ones(w.size), w, 3.0, n_cells=2000)
        assert np.isfinite(est)


def test_log_p0_mc_standard_error_is_the_delta_method():
    """se of log p_hat = sqrt((1 - p) / (n p)) (delta method), with p the fraction of y = 0."""
    beta, w = np.array([0.0, 1.0, 2.5]), np.array([0.5, 0.3, 0.2])
    est, se = theory.log_p0_mc(beta, w, 2.0, n_cells=1000, seed=1)
    p = round(np.exp(est) * 1000) / 1000  # a fraction of 1000 cells
    assert se == pytest.approx(np.sqrt((1 - p) / (1000 * p)), rel=1e-9)

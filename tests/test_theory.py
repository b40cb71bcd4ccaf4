"""Tests of liftkit.lift.theory: coherence (LIFT Def 5.3, Prop 5.5), Prop 5.2 and LeaVS (App. D).

Equation numbers are those of the book's Derivations appendix (book/derivations.md).
"""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
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

"""Theory of LIFT (Section 5): the reduction to vector compressed sensing and design coherence.

* Prop 5.2 (LIFT eqs. 8-12, proved by eqs. 18-22): with f piecewise constant on K regions, a
  cell's Poisson process of sequences reduces to independent region counts
  ``n_ik ~ Poisson(MOI * w_k)`` (eq. 10), and the MAP under Gaussian noise is a LASSO on
  ``theta = w * beta`` (eq. 12).
* Def 5.3 and Props 5.4-5.5 (LIFT eqs. 13-17, proved by eqs. 23-35): the coherence ``mu`` of
  individual testing (``= K``) and of Poisson (high-MOI) designs: exact, the paper's bound
  (eq. 17) and Monte Carlo.
* App. D (LIFT eqs. 36-39): the LeaVS term ``log P(y = 0)`` for Poisson noise, exactly (eq. 38),
  by simulated cells (eq. 36), and its link to the functional L1 norm (eqs. 37, 39).
* A LASSO recovery experiment on the reduced vector model (eq. 12, standardised as eq. 23).

Equation numbers are the paper's, as rebuilt in the book's Derivations appendix
(``book/derivations.md``), where every equation cited here is written out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from liftkit.utils import resolve_device

__all__ = [
    "coherence_individual",
    "coherence_exact",
    "coherence_bound",
    "coherence_mc",
    "CoherenceMC",
    "simulate_points",
    "region_counts",
    "fit_map_points",
    "fit_lasso_reduced",
    "log_p0_exact",
    "log_p0_linear",
    "log_p0_mc",
    "standardized_design",
    "recovery_experiment",
    "m_needed",
]


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _check_design(K: int, moi: float, m: float) -> None:
    if int(K) != K or K < 1:
        raise ValueError(f"K (number of regions) must be a positive integer, got {K!r}")
    if not np.isfinite(moi) or moi <= 0:
        raise ValueError(f"moi must be a positive finite number, got {moi!r}")
    if not np.isfinite(m) or m < 1:
        raise ValueError(f"m (number of measurements) must be >= 1, got {m!r}")


def _thresholds(K: int, m: float) -> tuple[float, float]:
    """Right-hand sides of the stochastic coherence conditions, LIFT eqs. 14 and 15."""
    return 1.0 / (20.0 * K**1.5), 1.0 / (m * K)


def _check_w(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    if w.ndim != 1 or w.size == 0 or (w <= 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError("w must be a 1-D vector of positive region masses summing to 1")
    return w


# ----------------------------------------------------------------------------------------------
# coherence (Def 5.3, Prop 5.5)
# ----------------------------------------------------------------------------------------------
def coherence_individual(K: int) -> int:
    """Coherence of individual testing, ``mu = K`` (LIFT Prop 5.5, App. B).

    One sequence per measurement from K equally likely regions gives ``a = sqrt(K) e_k``, so
    ``max_k a_k^2 = K`` deterministically (LIFT eq. 13).

    Parameters
    ----------
    K
        Number of regions (Assumption 5.1, LIFT eq. 8).

    Returns
    -------
    int
        The coherence, ``K``.

    Examples
    --------
    >>> coherence_individual(100)
    100
    """
    _check_design(K, 1.0, 1.0)
    return int(K)


def coherence_exact(K: int, moi: float, m: float) -> float:
    """Exact coherence of the Poisson design with uniform regions (LIFT Def 5.3, eqs. 14-15, 23).

    ``a_k = (n_k - nu) / sqrt(nu)`` with ``n_k ~ Poisson(nu)`` iid, ``nu = moi / K`` (eq. 23).
    Returns the smallest ``mu`` meeting both stochastic conditions

    * eq. 14: ``E[K^-1 ||a||^2 1{E^c}] <= 1 / (20 K^{3/2})``
    * eq. 15: ``P(E^c) <= 1 / (m K)``, with ``E = {max_k a_k^2 <= mu}``.

    Because coordinates are independent both factorise: with ``q = P(a_1^2 <= mu)`` and
    ``s = E[a_1^2 1{a_1^2 <= mu}]``, ``P(E^c) = 1 - q^K`` and the left side of eq. 14 is
    ``1 - s q^{K-1}``. Both are step functions of ``mu`` that change only at the values
    ``(n - nu)^2 / nu`` for integer ``n``, so the minimum is one of those values; it is found by
    suffix sums of the Poisson pmf (computed from the far tails inwards, for precision).

    The conditions carry Candes & Plan's (2011) constants as rebuilt in the Derivations appendix
    (medium confidence); no floor ``mu >= 1`` is imposed.

    Parameters
    ----------
    K, moi, m
        Number of equally likely regions, MOI ``lambda`` (> 0) and number of measurements
        (which sets the threshold of eq. 15).

    Returns
    -------
    float
        The exact coherence ``mu``.

    Examples
    --------
    For ``moi << K`` it is ``(j - nu)^2 / nu`` for a small copy number ``j`` (here 4):

    >>> round(coherence_exact(1000, 10, 1e4), 2)
    1592.01
    """
    _check_design(K, moi, m)
    nu = moi / K
    t14, t15 = _thresholds(K, m)
    half = 40.0 * np.sqrt(nu) + 60.0  # pmf beyond this is far below any threshold (< 1e-300)
    n = np.arange(max(0, int(np.floor(nu - half))), int(np.ceil(nu + half)) + 1)
    pmf = stats.poisson.pmf(n, nu)
    a2 = (n - nu) ** 2 / nu
    order = np.argsort(a2, kind="stable")
    a2s, ps = a2[order], pmf[order]
    # suffix sums from the largest a^2 (smallest mass) inwards
    tail_p = np.concatenate([np.cumsum(ps[::-1])[::-1], [0.0]])
    tail_t = np.concatenate([np.cumsum((ps * a2s)[::-1])[::-1], [0.0]])
    cand = np.unique(a2s)
    idx = np.searchsorted(a2s, cand, side="right")  # entries with a^2 > candidate
    p_out = np.clip(tail_p[idx], 0.0, 1.0)
    t_out = np.clip(tail_t[idx], 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_q = np.log1p(-p_out)
        cond15 = -np.expm1(K * log_q)
        cond14 = -np.expm1(np.log1p(-t_out) + (K - 1) * log_q)
    ok = (cond15 <= t15) & (cond14 <= t14)
    if not ok.any():  # pragma: no cover - the widest candidate always passes
        raise RuntimeError("no coherence candidate met eqs. 14-15; widen the Poisson grid")
    return float(cand[np.argmax(ok)])


def coherence_bound(K: int, moi: float, m: float) -> float:
    """Upper bound on the Poisson-design coherence, LIFT eq. 17 (Prop 5.5; App. B eqs. 29, 35).

    ``(1 + sqrt(K/moi))^2 * max{4 log^2(2 m K^2), 16 log^2(20 sqrt(2) K sqrt(K^2 + 2K + K^2/moi))}``.
    The constants are those of the Derivations appendix (medium confidence).

    Parameters
    ----------
    K, moi, m
        As in :func:`coherence_exact`.

    Returns
    -------
    float
        The bound; it lies two to three orders of magnitude above :func:`coherence_exact`.

    Examples
    --------
    >>> round(coherence_bound(100, 100, 1e4))
    10108
    """
    _check_design(K, moi, m)
    c1 = 4.0 * np.log(2.0 * m * K**2) ** 2
    c2 = 16.0 * np.log(20.0 * np.sqrt(2.0) * K * np.sqrt(K**2 + 2.0 * K + K**2 / moi)) ** 2
    return float((1.0 + np.sqrt(K / moi)) ** 2 * max(c1, c2))


@dataclass(frozen=True)
class CoherenceMC:
    """Monte Carlo coherence (LIFT Def 5.3): point estimate and an interval from +-z std errors.

    Attributes
    ----------
    mu
        Smallest simulated ``max_k a_k^2`` at which the empirical eqs. 14 and 15 hold.
    lower, upper
        The same with each empirical left side moved by minus / plus ``z`` standard errors.
    n_samples
        Number of simulated vectors ``a``.
    """

    mu: float
    lower: float
    upper: float
    n_samples: int


def _simulate_a_stats(
    K: int, nu: float, n_samples: int, seed: int, device: str | torch.device, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """``max_k a_k^2`` and ``K^-1 ||a||^2`` of ``n_samples`` vectors ``a`` of LIFT eq. 23.

    Vectors are drawn in chunks of about ``chunk`` Poisson variates with one torch generator.
    """
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    rate = torch.full((1,), nu, dtype=torch.float64, device=dev)
    rows = max(1, chunk // K)
    maxes, norms = [], []
    done = 0
    while done < n_samples:
        b = min(rows, n_samples - done)
        n = torch.poisson(rate.expand(b, K), generator=gen)
        a2 = (n - nu) ** 2 / nu
        maxes.append(a2.amax(dim=1).cpu())
        norms.append((a2.sum(dim=1) / K).cpu())
        done += b
    return torch.cat(maxes).numpy(), torch.cat(norms).numpy()


def _empirical_coherence(
    max_a2: np.ndarray, norm_a2: np.ndarray, K: int, t14: float, t15: float, z: float
) -> CoherenceMC:
    """Smallest simulated ``max_k a_k^2`` meeting the empirical LIFT eqs. 14-15, with interval."""
    cnt = max_a2.size
    order = np.argsort(max_a2, kind="stable")
    Ms, Ss = max_a2[order], norm_a2[order]
    tail_n = np.concatenate([np.arange(cnt, 0, -1), [0]]).astype(float)
    tail_s = np.concatenate([np.cumsum(Ss[::-1])[::-1], [0.0]])
    tail_s2 = np.concatenate([np.cumsum((Ss**2)[::-1])[::-1], [0.0]])
    cand = np.unique(Ms)
    idx = np.searchsorted(Ms, cand, side="right")
    p_hat = tail_n[idx] / cnt  # empirical P(E^c), eq. 15
    e_hat = tail_s[idx] / cnt  # empirical E[K^-1 ||a||^2 1{E^c}], eq. 14
    var_e = np.maximum(tail_s2[idx] / cnt - e_hat**2, 0.0)
    # floor the standard errors at one event's worth so an empty tail still has an interval
    se_p = np.sqrt(np.maximum(p_hat, 1.0 / cnt) * (1.0 - p_hat) / cnt)
    se_e = np.sqrt(np.maximum(var_e, (1.0 + cand / K) ** 2 / cnt) / cnt)

    def first(ok: np.ndarray) -> float:
        return float(cand[np.argmax(ok)]) if ok.any() else float("inf")

    return CoherenceMC(
        mu=first((p_hat <= t15) & (e_hat <= t14)),
        lower=first((p_hat - z * se_p <= t15) & (e_hat - z * se_e <= t14)),
        upper=first((p_hat + z * se_p <= t15) & (e_hat + z * se_e <= t14)),
        n_samples=int(cnt),
    )


def coherence_mc(
    K: int,
    moi: float,
    m: float,
    n_samples: int = 200_000,
    seed: int = 0,
    z: float = 3.0,
    device: str | torch.device = "cpu",
    chunk: int = 2**22,
) -> CoherenceMC:
    """Coherence of the Poisson design by simulation (LIFT Def 5.3), without factorising.

    Draws ``n_samples`` whole vectors ``a`` (eq. 23), and returns the smallest observed value of
    ``max_k a_k^2`` at which the empirical versions of eqs. 14 and 15 hold. ``lower``/``upper``
    replace each empirical left side by itself minus/plus ``z`` standard errors, so the exact
    coherence lies in ``[lower, upper]`` unless the Monte Carlo is unlucky at about the z-sigma
    level. This is a check of :func:`coherence_exact`, usable where the tails are resolvable.

    Parameters
    ----------
    K, moi, m
        As in :func:`coherence_exact`.
    n_samples
        Number of simulated vectors ``a``.
    seed
        Seed of the torch generator.
    z
        Width of the interval in standard errors.
    device
        Torch device of the simulation (``"auto"`` picks CUDA when present).
    chunk
        Poisson variates drawn at a time (bounds memory).

    Returns
    -------
    CoherenceMC

    Raises
    ------
    ValueError
        If ``n_samples`` is too small to resolve the thresholds (``< 20 / min(t14, t15)``).

    Examples
    --------
    >>> r = coherence_mc(10, 3.0, 10, n_samples=20_000, seed=0)
    >>> r.lower <= coherence_exact(10, 3.0, 10) <= r.upper
    True
    """
    _check_design(K, moi, m)
    t14, t15 = _thresholds(K, m)
    need = int(np.ceil(20.0 / min(t14, t15)))
    if n_samples < need:
        raise ValueError(
            f"n_samples={n_samples} cannot resolve tails of {min(t14, t15):.1e}: use at least "
            f"{need} samples, or a smaller K or m"
        )
    max_a2, norm_a2 = _simulate_a_stats(K, moi / K, n_samples, seed, device, chunk)
    return _empirical_coherence(max_a2, norm_a2, K, t14, t15, z)


# ----------------------------------------------------------------------------------------------
# Prop 5.2: points -> region counts -> LASSO
# ----------------------------------------------------------------------------------------------
def simulate_points(
    w: np.ndarray, moi: float, m: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the generative model at the level of points (LIFT eq. 5).

    Each of ``m`` cells gets ``N_i ~ Poisson(moi)`` sequences drawn iid from ``p``; only the
    region of each sequence matters under Assumption 5.1 (eq. 8), so a sequence is represented
    by its region label drawn from ``Categorical(w)``.

    Parameters
    ----------
    w
        Region masses ``w_k`` (positive, summing to 1).
    moi
        Multiplicity of infection ``lambda``.
    m
        Number of cells.
    seed
        Seed of the NumPy generator.

    Returns
    -------
    cell, region
        Two int arrays of length ``sum_i N_i``: the cell of each point and its region.

    Examples
    --------
    >>> cell, region = simulate_points(np.array([0.25, 0.75]), 2.0, 4, seed=0)
    >>> cell.shape == region.shape, int(cell.max()) < 4
    (True, True)
    """
    w = _check_w(w)
    _check_design(len(w), moi, m)
    rng = np.random.default_rng(seed)
    N = rng.poisson(moi, size=int(m))
    cell = np.repeat(np.arange(int(m)), N)
    # renormalised: _check_w accepts sums within np.isclose of 1, numpy's choice far less
    region = rng.choice(len(w), size=cell.size, p=w / w.sum())
    return cell, region


def region_counts(cell: np.ndarray, region: np.ndarray, m: int, K: int) -> np.ndarray:
    """``n_ik = mu_i(R_k)``, the number of cell i's sequences in region k (LIFT eq. 20).

    Vectorised with one ``bincount`` over the flattened (cell, region) index.

    Parameters
    ----------
    cell, region
        The cell and region label of each sequence (as from :func:`simulate_points`).
    m, K
        Number of cells and of regions.

    Returns
    -------
    numpy.ndarray
        The ``(m, K)`` integer count matrix.

    Examples
    --------
    >>> region_counts(np.array([0, 0, 2]), np.array([1, 0, 1]), m=3, K=2)
    array([[1, 1],
           [0, 0],
           [0, 1]])
    """
    cell = np.asarray(cell)
    region = np.asarray(region)
    if cell.shape != region.shape:
        raise ValueError("cell and region must have the same length (one entry per sequence)")
    if cell.size and (cell.min() < 0 or cell.max() >= m or region.min() < 0 or region.max() >= K):
        raise ValueError("cell labels must lie in [0, m) and region labels in [0, K)")
    return np.bincount(cell * K + region, minlength=int(m) * int(K)).reshape(int(m), int(K))


def fit_map_points(
    cell: np.ndarray,
    region: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    gamma: float,
    sigma: float = 1.0,
    n_iter: int = 20_000,
    tol: float = 1e-12,
) -> np.ndarray:
    """MAP of the functional model on points (LIFT eqs. 3, 6, 22), by FISTA.

    Minimises ``(1/(2 sigma^2)) sum_i (y_i - sum_j f(x_ij))^2 + gamma ||f||_{L1(p)}`` over
    ``f(x) = beta_{region(x)}`` (so ``||f||_1 = sum_k w_k |beta_k|``, eq. 18), evaluating the
    data term from the points: per-cell sums (eq. 21) and gradients are ``bincount`` segment sums.

    Parameters
    ----------
    cell, region
        The cell and region label of each sequence.
    y, w
        Readouts of the ``m`` cells; region masses.
    gamma, sigma
        Regularisation strength of eq. 3; Gaussian noise scale.
    n_iter, tol
        Iteration budget; stopping tolerance on the largest coordinate step.

    Returns
    -------
    numpy.ndarray
        ``beta_hat``, one value per region.

    Examples
    --------
    >>> fit_map_points([0, 1], [0, 1], [1.0, 0.0], np.array([0.5, 0.5]), gamma=0.2).round(2)
    array([0.9, 0. ])
    """
    w = _check_w(w)
    y = np.asarray(y, dtype=float)
    m, K = y.size, w.size
    n = region_counts(cell, region, m, K).astype(float)  # only for the step size (Lipschitz)
    L = np.linalg.norm(n, 2) ** 2 / sigma**2
    if L == 0:
        return np.zeros(K)
    thresh = gamma * w / L
    beta = np.zeros(K)
    z, t = beta.copy(), 1.0
    for _ in range(n_iter):
        pred = np.bincount(cell, weights=z[region], minlength=m)  # sum_j f(x_ij), eq. 21
        resid = pred - y
        grad = np.bincount(region, weights=resid[cell], minlength=K) / sigma**2
        u = z - grad / L
        new = np.sign(u) * np.maximum(np.abs(u) - thresh, 0.0)  # weighted soft threshold
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = new + (t - 1.0) / t_new * (new - beta)
        step = np.max(np.abs(new - beta))
        beta, t = new, t_new
        if step < tol:
            break
    return beta


def fit_lasso_reduced(
    counts: np.ndarray, y: np.ndarray, w: np.ndarray, gamma: float, sigma: float = 1.0
) -> np.ndarray:
    """The LASSO of LIFT eq. 12 with scikit-learn, mapped back to ``beta_hat = theta_hat / w``.

    ``argmin_theta ||y - A~ theta||^2 + alpha ||theta||_1`` with ``A~_ik = n_ik / w_k`` and
    ``alpha = 2 sigma^2 gamma``; scikit-learn's objective divides the squared error by ``2m``,
    so its ``alpha`` is ``sigma^2 gamma / m``. No intercept, as in eq. 12.

    Parameters
    ----------
    counts
        Region counts ``n_ik`` (eq. 20), shape ``(m, K)``.
    y, w, gamma, sigma
        As in :func:`fit_map_points`.

    Returns
    -------
    numpy.ndarray
        ``beta_hat``, equal to :func:`fit_map_points` on the same data up to solver tolerance.

    Examples
    --------
    >>> fit_lasso_reduced(np.eye(2), np.array([1.0, 0.0]), np.array([0.5, 0.5]), 0.2).round(2)
    array([0.9, 0. ])
    """
    from sklearn.linear_model import Lasso

    w = _check_w(w)
    y = np.asarray(y, dtype=float)
    A = np.asarray(counts, dtype=float) / w[None, :]  # A~ of eq. 12 (needs w_k > 0)
    model = Lasso(alpha=sigma**2 * gamma / y.size, fit_intercept=False, tol=1e-12, max_iter=200_000)
    model.fit(A, y)
    return model.coef_ / w


# ----------------------------------------------------------------------------------------------
# log P(y = 0) under Poisson noise, and the L1 norm (App. D)
# ----------------------------------------------------------------------------------------------
def log_p0_exact(beta: np.ndarray, w: np.ndarray, moi: float) -> float:
    """Exact ``log P(y = 0)`` of one cell for Poisson noise and ``f >= 0`` (LIFT eq. 38).

    ``-moi * int (1 - exp(-f)) p(dx) = -moi * sum_k w_k (1 - exp(-beta_k))`` (the Laplace
    functional of the Poisson process), for f piecewise constant (eq. 8). The LeaVS term of a
    sorted screen is ``N0`` times this. (Training uses a different function, the torch
    ``liftkit.lift.objectives.leavs_log_p0``, for NB noise and a neural f.)

    Parameters
    ----------
    beta
        Non-negative region values ``f = beta_k`` on region k.
    w
        Region masses.
    moi
        Multiplicity of infection ``lambda``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If some ``beta_k < 0`` (eq. 38 needs ``f >= 0``).

    Examples
    --------
    >>> round(log_p0_exact(np.array([0.0, 1.0]), np.array([0.5, 0.5]), 2.0), 4)
    -0.6321
    """
    beta, w = np.asarray(beta, dtype=float), _check_w(w)
    if (beta < 0).any():
        raise ValueError("eq. 38 needs f >= 0: pass non-negative beta")
    return float(-moi * np.sum(w * -np.expm1(-beta)))


def log_p0_linear(beta: np.ndarray, w: np.ndarray, moi: float) -> float:
    """``-moi * ||f||_{L1(p)}``: the Jensen bound (LIFT eq. 37) and small-f limit (eq. 39).

    A lower bound on :func:`log_p0_exact`, tight as ``f -> 0``; ``||f||_1 = sum_k w_k |beta_k|``
    (eq. 18).

    Parameters
    ----------
    beta, w, moi
        As in :func:`log_p0_exact` (any sign of ``beta`` is accepted).

    Returns
    -------
    float

    Examples
    --------
    >>> log_p0_linear(np.array([0.0, 1.0]), np.array([0.5, 0.5]), 2.0)
    -1.0
    """
    beta, w = np.asarray(beta, dtype=float), _check_w(w)
    return float(-moi * np.sum(w * np.abs(beta)))


def log_p0_mc(
    beta: np.ndarray, w: np.ndarray, moi: float, n_cells: int, seed: int = 0
) -> tuple[float, float]:
    """Monte Carlo ``log P(y = 0)`` from simulated cells (LIFT eq. 36), and its standard error.

    Cells follow eq. 5; ``y_i ~ Poisson(sum_j f(x_ij))``. The delta-method standard error of
    ``log p_hat`` is ``sqrt((1 - p) / (n p))``.

    Parameters
    ----------
    beta, w, moi
        As in :func:`log_p0_exact`.
    n_cells
        Number of simulated cells.
    seed
        Seed of the NumPy generator.

    Returns
    -------
    estimate, standard_error

    Raises
    ------
    ValueError
        If no simulated cell had ``y = 0``.

    Examples
    --------
    >>> beta, w = np.array([0.0, 1.0, 2.5]), np.array([0.5, 0.3, 0.2])
    >>> est, se = log_p0_mc(beta, w, 2.0, n_cells=20_000, seed=0)
    >>> abs(est - log_p0_exact(beta, w, 2.0)) < 4 * se
    True
    """
    beta, w = np.asarray(beta, dtype=float), _check_w(w)
    rng = np.random.default_rng(seed)
    cell, region = simulate_points(w, moi, n_cells, seed=int(rng.integers(2**31)))
    rate = np.bincount(cell, weights=beta[region], minlength=n_cells)
    y = rng.poisson(rate)
    p = float(np.mean(y == 0))
    if p == 0:
        raise ValueError("no simulated cell had y = 0: use more cells or a smaller f")
    return float(np.log(p)), float(np.sqrt((1.0 - p) / (n_cells * p)))


# ----------------------------------------------------------------------------------------------
# recovery on the reduced vector model (eq. 12 standardised as eq. 23)
# ----------------------------------------------------------------------------------------------
def standardized_design(K: int, moi: float | None, m: int, rng: np.random.Generator) -> np.ndarray:
    """Rows ``a_i`` of the reduced model with identity covariance (LIFT eq. 23, App. B).

    ``moi=None`` gives individual testing (``a = sqrt(K) e_k``, k uniform); otherwise
    ``a_k = (n_k - nu) / sqrt(nu)`` with ``n_k ~ Poisson(nu)``, ``nu = moi / K``.

    Parameters
    ----------
    K
        Number of regions (columns).
    moi
        Multiplicity of infection, or ``None`` for individual testing.
    m
        Number of rows (measurements).
    rng
        NumPy generator.

    Returns
    -------
    numpy.ndarray
        The ``(m, K)`` design.

    Examples
    --------
    >>> standardized_design(4, None, 2, np.random.default_rng(0))
    array([[0., 0., 0., 2.],
           [0., 0., 2., 0.]])
    """
    if moi is None:
        A = np.zeros((m, K))
        A[np.arange(m), rng.integers(K, size=m)] = np.sqrt(K)
        return A
    nu = moi / K
    return (rng.poisson(nu, size=(m, K)) - nu) / np.sqrt(nu)


def _lasso_rel_error(A: np.ndarray, y: np.ndarray, theta: np.ndarray, alpha: float) -> float:
    """``||theta_hat - theta|| / ||theta||`` of a scikit-learn LASSO (no intercept) on (A, y)."""
    from sklearn.linear_model import Lasso

    fit = Lasso(alpha=alpha, fit_intercept=False, max_iter=20_000, tol=1e-6)
    fit.fit(A, y)
    return float(np.linalg.norm(fit.coef_ - theta) / np.linalg.norm(theta))


def recovery_experiment(
    K: int,
    s: int,
    mois: list[float],
    ms: list[int],
    n_reps: int,
    sigma: float = 1.0,
    alpha_scale: float = 1.0,
    include_individual: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """LASSO recovery error versus number of measurements and MOI (LIFT Prop 5.4, eqs. 12, 16).

    The model is ``y_i = a_i^T theta + eps_i`` with standardised rows (eq. 23) so that the signal
    power per measurement, ``E[(a^T theta)^2] = ||theta||^2``, is the same for every design and
    only the coherence differs. ``theta`` has ``s`` entries +-1 (random signs and positions).
    The LASSO (scikit-learn, objective ``||y - A theta||^2/(2m) + alpha ||theta||_1``) uses
    ``alpha = alpha_scale * sigma * sqrt(2 log K / m)``, the Candes-Plan scaling; the constant
    is our choice (the paper fixes none).

    Parameters
    ----------
    K, s
        Number of regions and of non-zero entries of ``theta``.
    mois, ms
        MOIs of the Poisson designs, and numbers of measurements to try.
    n_reps, sigma, alpha_scale
        Replicates (a new ``theta`` each), noise scale, constant of the regularisation.
    include_individual, seed
        Also run individual testing (``a = sqrt(K) e_k``); seed of the NumPy generator.

    Returns
    -------
    pandas.DataFrame
        Columns ``design`` ("individual" or "Poisson"), ``moi`` (NaN for individual), ``m``,
        ``rep``, ``rel_error`` (``||theta_hat - theta|| / ||theta||``).

    Examples
    --------
    >>> df = recovery_experiment(K=20, s=2, mois=[5.0], ms=[100], n_reps=1, seed=0)
    >>> list(df.design), bool((df.rel_error < 1).all())
    (['Poisson', 'individual'], True)
    """
    if not 1 <= s <= K:
        raise ValueError(f"sparsity s must be in [1, K], got s={s}, K={K}")
    designs: list[float | None] = list(mois) + ([None] if include_individual else [])
    rng = np.random.default_rng(seed)
    rows = []
    for rep in range(n_reps):
        theta = np.zeros(K)
        theta[rng.choice(K, size=s, replace=False)] = rng.choice([-1.0, 1.0], size=s)
        for moi in designs:
            for m in ms:
                A = standardized_design(K, moi, m, rng)
                y = A @ theta + sigma * rng.standard_normal(m)
                alpha = alpha_scale * sigma * np.sqrt(2.0 * np.log(K) / m)
                err = _lasso_rel_error(A, y, theta, alpha)
                label = "individual" if moi is None else "Poisson"
                rows.append((label, np.nan if moi is None else float(moi), int(m), rep, err))
    return pd.DataFrame(rows, columns=["design", "moi", "m", "rep", "rel_error"])


def m_needed(curve_m: np.ndarray, curve_err: np.ndarray, target: float) -> float:
    """Smallest m at which a mean error curve falls to ``target`` (log-log interpolation).

    Reads off the effective-dataset-size consequence of LIFT Prop 5.4 (eq. 16) from a curve of
    :func:`recovery_experiment`.

    Parameters
    ----------
    curve_m
        Numbers of measurements, increasing.
    curve_err
        Error at each of them.
    target
        Error to reach.

    Returns
    -------
    float
        ``inf`` when the curve never reaches the target, ``curve_m[0]`` when it starts below it.

    Examples
    --------
    >>> round(m_needed(np.array([100, 200, 400]), np.array([0.8, 0.4, 0.2]), 0.3))
    267
    """
    m = np.asarray(curve_m, dtype=float)
    e = np.asarray(curve_err, dtype=float)
    below = np.nonzero(e <= target)[0]
    if below.size == 0:
        return float("inf")
    j = below[0]
    if j == 0:
        return float(m[0])
    x0, x1 = np.log(m[j - 1]), np.log(m[j])
    y0, y1 = np.log(e[j - 1]), np.log(e[j])
    frac = (np.log(target) - y0) / (y1 - y0) if y1 != y0 else 1.0
    return float(np.exp(x0 + frac * (x1 - x0)))

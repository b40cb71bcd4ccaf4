"""Laboratory-style splits and MOI subsampling (LIFT App. E).

* :func:`component_split`: train/test split that shares no cell and no sequence, by connected
  components of the bipartite cell-sequence graph (scipy.sparse.csgraph).
* :func:`estimate_moi`: the MOI from sequenced cells only, by the zero-truncated Poisson MLE.
* :func:`subsample_to_moi`: a lower-MOI training set drawn from a higher-MOI one, following the
  zero-truncated Poisson composition at the target MOI.

Everything works on the :class:`liftkit.lift.screen.Screen` CSR contract (``cell_ptr``, ``seq_idx``,
``y``, ``n0``, ``n_cells``, ``moi``; ``subset``, ``seqs_per_cell``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy import optimize, sparse
from scipy.sparse import csgraph

from liftkit.lift.library import SequenceLibrary
from liftkit.lift.screen import Screen

__all__ = [
    "ClonePool",
    "Split",
    "component_split",
    "MOIEstimate",
    "estimate_moi",
    "truncated_poisson_pmf",
    "subsample_indices",
    "subsample_to_moi",
]


# ----------------------------------------------------------------------------------------------
# a lab library: finitely many clones
# ----------------------------------------------------------------------------------------------
class ClonePool(SequenceLibrary):
    """A physical library: ``n_clones`` sequences drawn once from a design ``base``, then
    delivered to cells uniformly with replacement.

    A synthesised library is cloned and packaged before transduction, so each variant exists in
    finitely many copies and the same sequence can land in several cells. That is what makes
    App. E's component split necessary; with a continuous design library (no repeats) every cell
    would be its own component. ``n_clones`` relative to the number of sequences delivered sets
    how often sequences recur (our choice, S). Training still uses ``base`` as p(x): it is the
    model the lab knows.

    Examples
    --------
    >>> from liftkit.lift.library import EmpiricalLibrary
    >>> base = EmpiricalLibrary(["CARDW", "CARGW", "CAKDW"])
    >>> pool = ClonePool(base, n_clones=2, generator=torch.Generator().manual_seed(0))
    >>> len(torch.unique(pool.sample(50), dim=0)) <= 2
    True
    """

    def __init__(
        self, base: SequenceLibrary, n_clones: int, generator: torch.Generator | None = None
    ) -> None:
        if int(n_clones) < 1:
            raise ValueError(f"n_clones must be >= 1, got {n_clones}")
        self.base = base
        self.max_len = base.max_len
        self.clones = base.sample(int(n_clones), generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deliver ``n`` copies: uniform draws, with replacement, from the clones."""
        return self.clones[torch.randint(0, len(self.clones), (int(n),), generator=generator)]

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """The design's log p(x) (the clone pool's own p is a finite empirical measure)."""
        return self.base.log_prob(tokens)


# ----------------------------------------------------------------------------------------------
# component split
# ----------------------------------------------------------------------------------------------
def _cell_components(screen: Screen) -> tuple[np.ndarray, int]:
    """Component label of each sorted cell in the bipartite cell-sequence graph."""
    n = screen.n_sorted
    n_seq = int(screen.tokens.shape[0])
    counts = screen.seqs_per_cell().cpu().numpy()
    cell = np.repeat(np.arange(n), counts)
    seq = screen.seq_idx.cpu().numpy() + n  # sequence nodes come after the cell nodes
    graph = sparse.coo_matrix(
        (np.ones(cell.size, dtype=np.int8), (cell, seq)), shape=(n + n_seq, n + n_seq)
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    # relabel so that only components containing cells count, numbered 0..C-1
    uniq, cell_labels = np.unique(labels[:n], return_inverse=True)
    return cell_labels, int(uniq.size)


@dataclass
class Split:
    """A train/test split of a screen's sorted cells by whole components.

    Attributes
    ----------
    train, test
        The two sub-screens. Unsorted cells (``n0``) are apportioned to each in proportion to
        its share of sorted cells, so both keep the screen's hit rate (our choice: App. E does
        not say what happens to the unsorted count).
    train_cells, test_cells
        Indices of the original sorted cells in each part.
    sizes
        Cells per component, for every component.
    giant_fraction
        Fraction of sorted cells in the largest component.

    Examples
    --------
    >>> split = component_split(screen, 0.1)  # doctest: +SKIP
    >>> split.train.n_sorted + split.test.n_sorted == screen.n_sorted  # doctest: +SKIP
    True
    """

    train: Screen
    test: Screen
    train_cells: np.ndarray
    test_cells: np.ndarray
    sizes: np.ndarray
    giant_fraction: float

    def size_table(self) -> pd.DataFrame:
        """Component size distribution: how many components have each number of cells."""
        size, count = np.unique(self.sizes, return_counts=True)
        return pd.DataFrame({"cells per component": size, "components": count})


def _apportion(screen: Screen, sub: Screen, n_part: int) -> Screen:
    n0 = int(round(screen.n0 * n_part / max(screen.n_sorted, 1)))
    return replace(sub, n0=n0, n_cells=n_part + n0)


def _test_components(sizes: np.ndarray, target: float, seed: int) -> np.ndarray:
    """Components taken whole into the test set: shuffled (seeded), those larger than the target
    skipped, then the longest prefix whose running total of cells stays within ``target``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(sizes.size)
    cand = order[sizes[order] <= target]
    take = cand[np.cumsum(sizes[cand]) <= target]
    if take.size == 0:
        raise ValueError(
            f"no component fits in a test set of {target:.0f} cells (the smallest has "
            f"{sizes.min()}): raise test_fraction, or split a lower-MOI screen"
        )
    return take


def _warn_unbalanced(giant: float, giant_warn: float, n_test: int, target: float) -> None:
    """Warn (at the caller of :func:`component_split`) about a giant component and a test set
    under half its target."""
    if giant > giant_warn:
        warnings.warn(
            f"one connected component holds {giant:.0%} of the cells; it stays in train and the "
            "test set comes from the smaller components",
            stacklevel=3,
        )
    if n_test < 0.5 * target:
        warnings.warn(
            f"test set has {n_test} cells, under half the {target:.0f} asked: too few cells lie "
            "outside the largest components",
            stacklevel=3,
        )


def _split_screen(screen: Screen, test_mask: np.ndarray, sizes: np.ndarray, giant: float) -> Split:
    """The :class:`Split` whose test part is the sorted cells where ``test_mask`` is true."""
    train_cells = np.flatnonzero(~test_mask)
    test_cells = np.flatnonzero(test_mask)
    train = _apportion(screen, screen.subset(torch.from_numpy(train_cells)), train_cells.size)
    test = _apportion(screen, screen.subset(torch.from_numpy(test_cells)), test_cells.size)
    return Split(train, test, train_cells, test_cells, sizes, float(giant))


def component_split(
    screen: Screen, test_fraction: float = 0.1, seed: int = 0, giant_warn: float = 0.5
) -> Split:
    """Split sorted cells into train and test with no shared cell or sequence (LIFT App. E).

    Build the bipartite graph with one node per sorted cell and per unique sequence, an edge
    where a sequence is in a cell, and find its connected components (scipy.sparse.csgraph).
    Components are shuffled (seeded) and taken *whole* into the test set while the running
    total stays within ``test_fraction`` of the cells (a vectorised prefix sum); the rest is
    train. So no cell and no sequence is in both parts, and every cell is in exactly one.

    Giant component: at high MOI, or with a library whose sequences recur, shared sequences
    percolate and one component can hold most cells. A component larger than the test target
    can never enter the test set; it stays in train, and the test set is filled from the
    smaller components. A warning is raised when the largest component holds more than
    ``giant_warn`` of the cells, and when the small components cannot fill the test target (the
    test set is then smaller than asked; lower the MOI of the split or accept the smaller set).

    Parameters
    ----------
    screen
        The screen to split (its sorted cells).
    test_fraction
        Largest share of the sorted cells in the test set, in (0, 1).
    seed
        Seeds the order in which components are offered to the test set.
    giant_warn
        Warn when the largest component holds more than this share of the cells.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not in (0, 1), the screen has no sorted cell, or no component
        fits in the test set.

    Examples
    --------
    >>> split = component_split(screen, test_fraction=0.1, seed=0)  # doctest: +SKIP
    >>> split.size_table()  # doctest: +SKIP
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = screen.n_sorted
    if n == 0:
        raise ValueError("the screen has no sorted cells to split")
    labels, n_comp = _cell_components(screen)
    sizes = np.bincount(labels, minlength=n_comp)
    target = test_fraction * n
    take = _test_components(sizes, target, seed)
    giant = sizes.max() / n
    in_test = np.zeros(n_comp, dtype=bool)
    in_test[take] = True
    test_mask = in_test[labels]
    _warn_unbalanced(giant, giant_warn, int(test_mask.sum()), target)
    return _split_screen(screen, test_mask, sizes, giant)


# ----------------------------------------------------------------------------------------------
# MOI estimate
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MOIEstimate:
    """Zero-truncated Poisson MLE of the MOI, its standard error, and the data summary."""

    moi: float
    se: float
    n_cells: int
    mean_seqs: float


def _ztp_mean(lam: float) -> float:
    return lam / -np.expm1(-lam)


def estimate_moi(
    seqs_per_cell: torch.Tensor | np.ndarray,
    model: Literal["ztp", "size_biased"] = "ztp",
) -> MOIEstimate:
    """MOI from the sequence counts of sequenced cells only (LIFT App. E).

    Only sorted cells are sequenced, and every one carries at least one sequence, so the counts
    are modelled as zero-truncated Poisson: ``P(n) = lam^n e^-lam / (n! (1 - e^-lam))``,
    ``n >= 1``. The MLE solves ``lam / (1 - e^-lam) = mean(n)`` (brentq); the standard error is
    ``1 / sqrt(N I(lam))`` with Fisher information per cell
    ``I(lam) = 1 / (lam (1 - e^-lam)) - e^-lam / (1 - e^-lam)^2``. If every cell has exactly
    one sequence the MLE is on the boundary: the estimate is 0 with an infinite error.

    Like the paper, this ignores that sorting favours cells with more sequences (a cell with
    more sequences is more likely to pass the threshold), which biases the estimate upward.
    ``model="size_biased"`` (our addition) is the opposite limit: when each sequence has a small
    independent chance q of making its cell pass, ``P(sorted | n) ~ n q`` and the sorted counts
    are size-biased Poisson, ``n - 1 ~ Poisson(lam)``, so ``lam_hat = mean(n) - 1`` with standard
    error ``sqrt(lam_hat / N)``. The truth lies between the two when hits are not rare.

    Parameters
    ----------
    seqs_per_cell
        Number of sequences in each sequenced (sorted) cell, all >= 1.
    model
        ``"ztp"`` (the paper's) or ``"size_biased"`` (see above).

    Raises
    ------
    ValueError
        On empty input, non-integer counts, or any cell with zero sequences (those are never
        sequenced: pass sorted cells only).

    Examples
    --------
    >>> round(estimate_moi(np.array([1, 1, 2, 3])).moi, 3)
    1.247
    """
    n = torch.as_tensor(seqs_per_cell).detach().cpu().numpy().ravel()
    if n.size == 0:
        raise ValueError("no cells given: pass the sequence counts of the sequenced cells")
    if not np.all(np.isfinite(n)) or np.any(n != np.round(n)):
        raise ValueError("sequence counts must be whole numbers")
    if np.any(n < 1):
        raise ValueError(
            "cells with zero sequences found: the zero-truncated model takes sequenced cells "
            "only (every one has >= 1 sequence); drop the empty ones"
        )
    N, mean = int(n.size), float(n.mean())
    if model == "size_biased":
        lam = mean - 1.0
        return MOIEstimate(lam, float(np.sqrt(max(lam, 1e-12) / N)), N, mean)
    if model != "ztp":
        raise ValueError(f"model must be 'ztp' or 'size_biased', got {model!r}")
    if mean <= 1.0:
        return MOIEstimate(0.0, float("inf"), N, mean)
    lam = optimize.brentq(lambda x: _ztp_mean(x) - mean, 1e-12, mean + 1.0, xtol=1e-14)
    em = -np.expm1(-lam)
    info = 1.0 / (lam * em) - np.exp(-lam) / em**2
    return MOIEstimate(float(lam), float(1.0 / np.sqrt(N * info)), N, mean)


# ----------------------------------------------------------------------------------------------
# subsampling to a lower MOI
# ----------------------------------------------------------------------------------------------
def truncated_poisson_pmf(n: np.ndarray, lam: float) -> np.ndarray:
    """``TP(n; lam) = lam^n e^-lam / (n! (1 - e^-lam))`` for ``n >= 1`` (0 for ``n < 1``).

    Examples
    --------
    >>> truncated_poisson_pmf(np.array([0, 1, 2]), 1.0).round(3)
    array([0.   , 0.582, 0.291])
    """
    from scipy import stats

    n = np.asarray(n)
    return np.where(n >= 1, stats.poisson.pmf(n, lam) / -np.expm1(-lam), 0.0)


HitsRule = Literal["nonempty", "sequences"]


def _check_subsample(n: np.ndarray, target_moi: float, moi_hat: float) -> None:
    if n.size == 0:
        raise ValueError("no cells to subsample")
    if np.any(n < 1):
        raise ValueError("cells with zero sequences found: subsample sequenced cells only")
    if not np.isfinite(target_moi) or target_moi <= 0:
        raise ValueError(f"target_moi must be > 0, got {target_moi}")
    if not np.isfinite(moi_hat) or moi_hat <= 0:
        raise ValueError(f"moi_hat must be > 0, got {moi_hat}")
    if target_moi > moi_hat:
        raise ValueError(
            f"target_moi={target_moi} exceeds the screen's MOI {moi_hat:.3g}: subsampling can "
            "only lower the MOI"
        )


def subsample_indices(
    seqs_per_cell: torch.Tensor | np.ndarray,
    target_moi: float,
    moi_hat: float,
    seed: int = 0,
    hits_rule: HitsRule = "nonempty",
) -> np.ndarray:
    """Indices of the cells kept by :func:`subsample_to_moi` (see there for the rule).

    Raises
    ------
    ValueError
        No cells, a cell with zero sequences, a non-positive MOI, ``target_moi > moi_hat``, or
        an unknown ``hits_rule``.

    Examples
    --------
    >>> n = np.repeat([1, 2, 3], [60, 30, 10])
    >>> subsample_indices(n, target_moi=0.5, moi_hat=1.2, seed=0).size
    56
    """
    n = torch.as_tensor(seqs_per_cell).detach().cpu().numpy().ravel().astype(np.int64)
    _check_subsample(n, target_moi, moi_hat)
    M = n.size
    if hits_rule == "nonempty":
        m_new = M * np.expm1(-target_moi) / np.expm1(-moi_hat)
    elif hits_rule == "sequences":
        m_new = M * target_moi / moi_hat
    else:
        raise ValueError(f"hits_rule must be 'nonempty' or 'sequences', got {hits_rule!r}")
    n_max = int(n.max())
    bins = np.arange(1, n_max + 1)
    available = np.bincount(n, minlength=n_max + 1)[1:]
    share = truncated_poisson_pmf(bins, target_moi)
    # never ask a bin for more cells than it has: shrink the total until every bin that would
    # be asked for more fits, which keeps the composition exact (only the total falls short).
    # Shrinking only lowers the other bins' demands, so one pass suffices.
    short = np.round(m_new * share) > available
    if short.any():
        m_new = min(m_new, float(np.min((available[short] + 0.49) / share[short])))
    want = np.minimum(np.round(m_new * share).astype(np.int64), available)
    rng = np.random.default_rng(seed)
    # one random key per cell; within each count-bin keep the `want` smallest keys
    key = rng.random(M)
    order = np.lexsort((key, n))  # by bin, then random
    start = np.concatenate([[0], np.cumsum(available)[:-1]])
    rank = np.empty(M, dtype=np.int64)
    rank[order] = np.arange(M) - np.repeat(start, available)
    keep = rank < want[n - 1]
    return np.flatnonzero(keep)


def subsample_to_moi(
    screen: Screen,
    target_moi: float,
    seed: int = 0,
    moi_hat: float | None = None,
    hits_rule: HitsRule = "nonempty",
) -> Screen:
    """A lower-MOI training screen drawn from a higher-MOI one (LIFT App. E).

    Assumption (App. E): given the number n of sequences in a cell, the distribution of (x, y)
    does not depend on the MOI. So a screen at ``target_moi`` is mimicked by drawing, without
    replacement, ``round(M' TP(n; target_moi))`` of the cells that carry exactly n sequences,
    for every n >= 1, where TP is the zero-truncated Poisson pmf.

    The total number of sorted cells ``M'`` at the lower MOI was lost from the paper's text. We
    take (``hits_rule="nonempty"``, default) ``M' = M (1 - e^-lam') / (1 - e^-lam_hat)``: hits
    scale with the number of cells that received any sequence. The alternative
    (``"sequences"``) is ``M' = M lam' / lam_hat``: hits scale with the number of sequences
    delivered. If some count-bin holds fewer cells than asked (e.g. singletons, when ``lam'`` is
    close to ``lam_hat`` and both are near 1), ``M'`` is lowered until every bin fits, so the
    composition stays exact up to rounding. Counts above the screen's largest n get no cells
    (their share is negligible at a lower MOI). Cells are never invented or repeated.

    The total number of screened cells is kept (``n_cells``, as the paper keeps N fixed), so
    ``n0`` becomes ``n_cells - M'`` and ``moi`` becomes ``target_moi``. Call again with other
    seeds for repeats.

    Parameters
    ----------
    screen
        The (training) screen to subsample, sorted cells only.
    target_moi
        The MOI to mimic, ``<= moi_hat``.
    seed
        Seeds which cells are drawn.
    moi_hat
        The screen's MOI; by default :func:`estimate_moi` of its sequence counts.
    hits_rule
        ``"nonempty"`` or ``"sequences"``, as above.

    Examples
    --------
    >>> low = subsample_to_moi(train_screen, target_moi=0.5, seed=0)  # doctest: +SKIP
    >>> low.moi  # doctest: +SKIP
    0.5
    """
    if moi_hat is None:
        moi_hat = estimate_moi(screen.seqs_per_cell()).moi
    idx = subsample_indices(screen.seqs_per_cell(), target_moi, moi_hat, seed, hits_rule)
    sub = screen.subset(torch.from_numpy(idx).to(screen.y.device))
    return replace(
        sub,
        n0=max(int(screen.n_cells) - idx.size, 0),
        n_cells=int(screen.n_cells),
        moi=float(target_moi),
    )

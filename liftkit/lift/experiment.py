"""Evaluation on held-out sequences and the synthetic MOI experiment (LIFT Sec. 6, Fig. 2, App. C).

A :class:`TestSet` holds fresh single sequences from the library, each tested once by the
:class:`~liftkit.lift.oracle.Oracle` (label: count > 10); models are scored by PR AUC on it.
:func:`moi_experiment` simulates a screen per (MOI, replicate), fits every method of
:data:`METHODS` on it and scores them on one shared test set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from liftkit.lift.library import CDRH3Library, SequenceLibrary
from liftkit.lift.objectives import trim
from liftkit.lift.oracle import Oracle
from liftkit.lift.screen import Screen, simulate_screen
from liftkit.lift.train import FitResult, fit_conventional, fit_lift
from liftkit.metrics import pr_auc, pr_curve
from liftkit.utils import resolve_device


@torch.no_grad()
def predict(
    model: FitResult | torch.nn.Module,
    tokens: torch.Tensor,
    batch_size: int = 8192,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """f_theta on ``tokens`` in batches; returns a CPU float tensor ``(n,)``."""
    net = model.net if isinstance(model, FitResult) else model
    dev = next(net.parameters()).device if device is None else resolve_device(device)
    net = net.to(dev).eval()
    out = [net(trim(chunk.to(dev))).cpu() for chunk in tokens.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


@dataclass
class TestSet:
    """Held-out single sequences x ~ p with y ~ NB(s(x)) and the label y > ``label_threshold``."""

    tokens: torch.Tensor
    y: torch.Tensor
    strength: torch.Tensor
    label: torch.Tensor


def make_test_set(
    library: SequenceLibrary,
    n: int,
    *,
    oracle: Oracle = Oracle(),  # noqa: B008 - a frozen (immutable) default
    label_threshold: float = 10.0,
    generator: torch.Generator | None = None,
) -> TestSet:
    """Fresh single sequences from the library, tested one per cell (LIFT App. C evaluation).

    Parameters
    ----------
    library
        The library p(x) the sequences are drawn from.
    n
        Number of sequences.
    oracle
        Their strength s(x) and NB noise.
    label_threshold
        A sequence is a hit when its count exceeds it (App. C: 10).
    generator
        Torch generator (the NumPy draws are seeded from it).
    """
    if n < 1:
        raise ValueError(f"test set size must be >= 1, got {n}")
    tokens = library.sample(n, generator)
    strength = oracle.strength(tokens)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    y = torch.from_numpy(oracle.sample(strength, rng=rng)).float()
    return TestSet(tokens=tokens, y=y, strength=strength, label=y > label_threshold)


def evaluate(model: FitResult | torch.nn.Module, test: TestSet) -> float:
    """PR AUC (average precision) of f_theta for the test set's label (y > 10, App. C)."""
    return pr_auc(test.label, predict(model, test.tokens))


#: Method name -> (fit function, extra keyword arguments).
METHODS = {
    "LIFT": (fit_lift, {"leavs": True}),
    "conventional": (fit_conventional, {}),
    "LIFT (no LeaVS)": (fit_lift, {"leavs": False, "l1": 0.0}),
}


@dataclass
class ExperimentResult:
    """Rows ``(moi, replicate, method, pr_auc, ...)`` and PR curves at the top MOI."""

    table: object  # pandas.DataFrame
    curves: dict
    test: TestSet
    seconds: float


def _test_library(library: SequenceLibrary) -> SequenceLibrary:
    """The library of the test sequences: for a pooled OLGA library an independent pool, so test
    sequences are fresh draws from OLGA rather than repeats of the screen's pool."""
    if isinstance(library, CDRH3Library) and library.pool_size is not None:
        return CDRH3Library(library.max_len, library.pool_size, library.pool_seed + 1)
    return library


def _fit_and_score(
    method: str,
    screen: Screen,
    library: SequenceLibrary,
    test: TestSet,
    fit_kw: dict | None,
    seed: int,
    device: str | torch.device,
) -> tuple[dict, torch.Tensor | None]:
    """One table row for ``method`` on ``screen``, and its test scores (None if unscored)."""
    row = dict(method=method, n_sorted=screen.n_sorted, n0=screen.n0)
    if screen.n_sorted < 10:  # too few sequenced cells to train on
        row.update(pr_auc=float("nan"), seconds=0.0, best_step=0)
        return row, None
    fit, extra = METHODS[method]
    res = fit(screen, library, **{**(fit_kw or {}), **extra}, seed=seed, device=device,
              show_progress=False)
    scores = predict(res, test.tokens)
    # PR AUC is undefined without a positive test label (tiny tests, tiny s0): NaN
    has_pos = bool(test.label.any())
    auc = pr_auc(test.label, scores) if has_pos else float("nan")
    row.update(pr_auc=auc, seconds=res.seconds, best_step=res.best_step, phi=res.phi)
    return row, (scores if has_pos else None)


def moi_experiment(
    library: SequenceLibrary,
    mois=(0.1, 0.3, 1.0, 3.0, 10.0),
    n_cells: int = 2000,
    replicates: int = 2,
    methods=("LIFT", "conventional"),
    *,
    oracle: Oracle = Oracle(),  # noqa: B008 - a frozen (immutable) default
    threshold: float = 0.0,
    n_test: int = 20000,
    test: TestSet | None = None,
    fit_kw: dict | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    curve_moi: float | None = None,
) -> ExperimentResult:
    """Run the synthetic experiment of LIFT Figure 2 (App. C) on a grid of MOIs.

    For every MOI and replicate a fresh screen of ``n_cells`` cells is simulated with
    ``oracle`` and sorting ``threshold`` (the number of cells is fixed across MOIs, as in the
    paper), each method in ``methods`` (keys of :data:`METHODS`) is trained on it with
    ``fit_kw``, and scored by PR AUC on one held-out test set of ``n_test`` single sequences
    (label y > 10), shared by every MOI and replicate (for a pooled
    :class:`~liftkit.lift.library.CDRH3Library` it comes from an independent OLGA pool).

    Returns
    -------
    ExperimentResult
        ``table`` has one row per (MOI, replicate, method); ``curves`` maps method to the
        precision-recall curve of replicate 0 at ``curve_moi`` (default: the largest MOI).
    """
    import pandas as pd

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {list(METHODS)}")
    if replicates < 1 or len(mois) == 0:
        raise ValueError("need at least one MOI and one replicate")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    if test is None:
        test = make_test_set(_test_library(library), n_test, oracle=oracle, generator=gen)
    curve_moi = max(mois) if curve_moi is None else curve_moi
    rows, curves = [], {}
    for moi in mois:
        for rep in range(replicates):
            g = torch.Generator().manual_seed(seed * 100_003 + rep * 1009 + int(moi * 1000))
            screen = simulate_screen(library, n_cells, moi, oracle=oracle, threshold=threshold,
                                     generator=g)
            for method in methods:
                row, scores = _fit_and_score(method, screen, library, test, fit_kw, seed + rep,
                                             device)
                rows.append({"moi": moi, "replicate": rep, **row})
                if scores is not None and moi == curve_moi and rep == 0:
                    curves[method] = pr_curve(test.label, scores)
    return ExperimentResult(pd.DataFrame(rows), curves, test, time.perf_counter() - t0)

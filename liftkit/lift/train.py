"""LIFT and conventional training of the sequence CNN on a pooled screen (LIFT Sec. 4, App. C-D).

LIFT (eq. 6 with NB noise, plus App. D) maximises

    sum_{i sorted} log NB(y_i | sum_j f(x_ij), phi)  +  N0 log P(y <= tau)  -  gamma ||f||_{L1(p)}

where the second term is the LeaVS correction (eq. 36: the probability that a cell built from
library samples at the screen's MOI is not sorted) and the third the explicit functional L1
penalty (eq. 3, 7; off by default since LeaVS already acts as it, eq. 37-39). ``leavs=False``
and ``l1=0`` is the paper's "no regularisation" ablation.

Conventional training splits every sorted cell into pairs (x_ij, y_i) and fits the same network
with the same NB likelihood and the single-sequence LeaVS term N0 log E_p[P(y <= tau | f(x))].

Minibatch scaling: a minibatch of B of the n_train training cells contributes
(n_train / B) * sum_b log NB(...), an unbiased estimate of the full data term; the global LeaVS
term enters every step whole, with N0 scaled by the training fraction (n_train / n_sorted) so
that the ratio of sorted to unsorted cells is that of the screen; the L1 term enters whole.
The total is divided by n_train + N0 (a constant) so learning rates do not depend on the screen
size. All per-cell sums are vectorised: the sequences of a minibatch are flattened, deduplicated,
f is evaluated once, and ``index_add_`` sums them per cell.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from liftkit.lift.library import PAD, CDRH3Library, SequenceLibrary
from liftkit.lift.nets import SeqCNN
from liftkit.lift.oracle import DEFAULT_PATTERNS, PHI, motif_strength, sample_activity
from liftkit.lift.screen import Screen, gather_entries, simulate_screen
from liftkit.metrics import pr_auc
from liftkit.stats import nb_log_cdf, nb_log_prob
from liftkit.utils import progress, resolve_device

# ---------------------------------------------------------------------------------------------
# Likelihood pieces
# ---------------------------------------------------------------------------------------------


def leavs_log_p0(
    f_mc: torch.Tensor,
    moi: float,
    phi: torch.Tensor | float,
    threshold: float = 0.0,
    estimator: str = "auto",
    n_cells_mc: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte Carlo estimate of log P(y <= tau) for a cell of the screen (LIFT eq. 36, App. D).

    Parameters
    ----------
    f_mc
        f evaluated on iid library samples x_l ~ p.
    moi
        The screen's (known or estimated) MOI.
    phi
        NB dispersion.
    threshold
        Sorting threshold tau.
    estimator
        ``"pgf"``: the number of sequences is integrated out exactly (Poisson PGF) and only x
        is sampled: log P(y=0) = -MOI * mean_l [1 - (1 + f(x_l)/phi)^-phi]. Exact in
        expectation for per-sequence NB noise and tau = 0 (the simulator of App. C).
        ``"cells"``: the literal eq. 36: simulate ``n_cells_mc`` cells with Poisson(MOI)
        sequences drawn from ``f_mc`` and average P(y <= tau | cell); per-sequence NB when
        tau = 0, else a cell-level NB(sum f) CDF (the likelihood's noise model, eq. 6).
        ``"auto"``: ``"pgf"`` when tau = 0, else ``"cells"``.
    n_cells_mc
        Simulated cells for ``"cells"`` (default ``len(f_mc)``).
    """
    if moi <= 0:
        raise ValueError(f"moi must be > 0, got {moi}")
    if estimator == "auto":
        estimator = "pgf" if threshold == 0 else "cells"
    phi_t = torch.as_tensor(phi, dtype=f_mc.dtype, device=f_mc.device)
    # log P(y_seq = 0) for one sequence with per-sequence NB noise
    log_g = -phi_t * torch.log1p(f_mc / phi_t)
    if estimator == "pgf":
        if threshold != 0:
            raise ValueError("the 'pgf' LeaVS estimator needs threshold 0: use estimator='cells'")
        return -moi * (1 - torch.exp(log_g)).mean()
    if estimator != "cells":
        raise ValueError(f"unknown LeaVS estimator {estimator!r}: use 'auto', 'pgf' or 'cells'")
    n = len(f_mc) if n_cells_mc is None else int(n_cells_mc)
    counts = torch.poisson(torch.full((n,), float(moi)), generator=generator).long()
    total = int(counts.sum())
    pick = torch.randint(0, len(f_mc), (total,), generator=generator).to(f_mc.device)
    owner = torch.repeat_interleave(torch.arange(n), counts).to(f_mc.device)
    if threshold == 0:
        log_cell = torch.zeros(n, dtype=f_mc.dtype, device=f_mc.device).index_add(
            0, owner, log_g[pick]
        )
    else:
        mu = torch.zeros(n, dtype=f_mc.dtype, device=f_mc.device).index_add(0, owner, f_mc[pick])
        log_cell = nb_log_cdf(threshold, mu.clamp_min(1e-10), phi_t)
        log_cell = torch.where(counts.to(f_mc.device) == 0, torch.zeros_like(log_cell), log_cell)
    return torch.logsumexp(log_cell, 0) - math.log(n)


def single_leavs_log_p0(
    f_mc: torch.Tensor, phi: torch.Tensor | float, threshold: float = 0.0
) -> torch.Tensor:
    """Single-sequence LeaVS term log E_p[P(y <= tau | f(x))] used by conventional training."""
    phi_t = torch.as_tensor(phi, dtype=f_mc.dtype, device=f_mc.device)
    log_cell = nb_log_cdf(threshold, f_mc.clamp_min(1e-10), phi_t)
    return torch.logsumexp(log_cell, 0) - math.log(len(f_mc))


# ---------------------------------------------------------------------------------------------
# Pooled forward
# ---------------------------------------------------------------------------------------------


def trim(tokens: torch.Tensor) -> torch.Tensor:
    """Drop trailing all-padding columns (the network's output does not change)."""
    width = int((tokens != PAD).sum(1).max()) if len(tokens) else 1
    return tokens[:, : max(width, 1)]


def evaluate_unique(net: torch.nn.Module, tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """f on ``tokens[idx]``, evaluating each distinct index once."""
    uniq, inverse = torch.unique(idx, return_inverse=True)
    return net(trim(tokens[uniq]))[inverse]


def pooled_mean(
    net: torch.nn.Module,
    screen: Screen,
    cells: torch.Tensor,
    dedupe: bool = True,
    extra_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sum_j f(x_ij) for a minibatch of sorted cells, vectorised (LIFT eq. 6).

    The cells' entries are gathered from the CSR arrays, f is evaluated once on the (deduped)
    sequences (and on ``extra_tokens``, e.g. the LeaVS Monte Carlo samples, in the same call)
    and summed per cell with ``index_add``.

    Returns
    -------
    (mean, f_extra)
        ``(B,)`` per-cell sums and f on ``extra_tokens`` (or None).
    """
    entries = gather_entries(screen.cell_ptr, cells)
    sid = screen.seq_idx[entries]
    counts = screen.cell_ptr[cells + 1] - screen.cell_ptr[cells]
    owner = torch.repeat_interleave(torch.arange(len(cells), device=cells.device), counts)
    if dedupe:
        uniq, inverse = torch.unique(sid, return_inverse=True)
    else:
        uniq, inverse = sid, torch.arange(len(sid), device=sid.device)
    toks = screen.tokens[uniq]
    n_extra = 0 if extra_tokens is None else len(extra_tokens)
    if n_extra:
        toks = torch.cat([toks, extra_tokens])
    f = net(trim(toks))
    f_seq = f[: len(uniq)][inverse]
    mean = torch.zeros(len(cells), dtype=f.dtype, device=f.device).index_add(0, owner, f_seq)
    return mean, (f[len(uniq) :] if n_extra else None)


def pooled_mean_loop(net: torch.nn.Module, screen: Screen, cells: torch.Tensor) -> torch.Tensor:
    """Reference: one network call per cell (what :func:`pooled_mean` vectorises)."""
    out = []
    for c in cells.tolist():
        sid = screen.seq_idx[screen.cell_ptr[c] : screen.cell_ptr[c + 1]]
        out.append(net(screen.tokens[sid]).sum())
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """A trained network and its training record."""

    net: SeqCNN
    phi: float
    method: str
    history: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    seconds: float = 0.0
    sequences_seen: int = 0
    cells_seen: int = 0

    @property
    def sequences_per_second(self) -> float:
        return self.sequences_seen / max(self.seconds, 1e-9)

    @property
    def cells_per_second(self) -> float:
        return self.cells_seen / max(self.seconds, 1e-9)


def _check_screen(screen: Screen, min_cells: int = 2) -> None:
    if screen.n_sorted < min_cells:
        raise ValueError(
            f"the screen has {screen.n_sorted} sequenced cells (need >= {min_cells}): "
            "screen more cells, raise the MOI or lower the sorting threshold"
        )


def _split_cells(n: int, val_frac: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 <= val_frac < 1:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(val_frac * n)) if val_frac > 0 else 0
    n_val = min(max(n_val, 1 if val_frac > 0 else 0), n - 1)
    return perm[n_val:], perm[:n_val]


def _fit(
    screen: Screen,
    library: SequenceLibrary,
    method: str,
    *,
    moi: float | None = None,
    leavs: bool = True,
    l1: float = 0.0,
    net: SeqCNN | None = None,
    net_kw: dict | None = None,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 3e-3,
    n_mc: int = 512,
    mc_pool: int = 20000,
    leavs_estimator: str = "auto",
    phi_init: float = 1.0,
    learn_phi: bool = True,
    val_frac: float = 0.1,
    eval_every: int = 50,
    patience: int = 8,
    dedupe: bool = True,
    device: str | torch.device = "auto",
    seed: int = 0,
    show_progress: bool = True,
) -> FitResult:
    dev = resolve_device(device)
    _check_screen(screen)
    moi = screen.moi if moi is None else float(moi)
    if moi <= 0:
        raise ValueError(f"moi must be > 0, got {moi}")
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # network initialisation
    net = (net or SeqCNN(max_len=library.max_len, **(net_kw or {}))).to(dev)
    log_phi = torch.tensor(math.log(phi_init), device=dev, requires_grad=learn_phi)
    params = list(net.parameters()) + ([log_phi] if learn_phi else [])
    opt = torch.optim.Adam(params, lr=lr)

    train_cells, val_cells = _split_cells(screen.n_sorted, val_frac, gen)
    scr = screen.to(dev)
    n_train = len(train_cells)
    n0_eff = screen.n0 * n_train / screen.n_sorted
    need_mc = (leavs and screen.n0 > 0) or l1 > 0
    pool = library.sample(mc_pool, gen).to(dev) if need_mc else None
    val_mc = pool[: min(len(pool), 2048)] if need_mc else None  # fixed across evaluations

    if method == "conventional":
        counts = screen.seqs_per_cell()
        # pairs of the training / validation cells, as indices into scr.tokens
        tr_entries = gather_entries(screen.cell_ptr, train_cells)
        pair_x = screen.seq_idx[tr_entries].to(dev)
        pair_y = torch.repeat_interleave(screen.y[train_cells], counts[train_cells]).to(dev)
        va_entries = gather_entries(screen.cell_ptr, val_cells)
        val_x = screen.seq_idx[va_entries].to(dev)
        val_y = torch.repeat_interleave(screen.y[val_cells], counts[val_cells]).to(dev)
        n_units = len(pair_x)
        # same number of sequences per step as LIFT: batch of cells * mean sequences per cell
        unit_batch = max(1, int(round(batch_size * float(counts.double().mean()))))
        scale_total = n_units + n0_eff
    else:
        n_units = n_train
        unit_batch = batch_size
        scale_total = n_train + n0_eff
        train_dev, val_dev = train_cells.to(dev), val_cells.to(dev)
    unit_batch = min(unit_batch, n_units)

    def objective(units: torch.Tensor) -> tuple[torch.Tensor, int]:
        phi = log_phi.exp()
        mc = pool[torch.randint(0, len(pool), (n_mc,), generator=gen).to(dev)] if need_mc else None
        if method == "conventional":
            xi = pair_x[units]
            uniq, inverse = (torch.unique(xi, return_inverse=True) if dedupe
                             else (xi, torch.arange(len(xi), device=dev)))
            toks = scr.tokens[uniq] if mc is None else torch.cat([scr.tokens[uniq], mc])
            f = net(trim(toks))
            ll = nb_log_prob(pair_y[units], f[: len(uniq)][inverse], phi).sum()
            f_mc = f[len(uniq) :]
            n_seq = len(xi)
        else:
            cells = train_dev[units]
            mean, f_mc = pooled_mean(net, scr, cells, dedupe=dedupe, extra_tokens=mc)
            ll = nb_log_prob(scr.y[cells], mean, phi).sum()
            n_seq = int((scr.cell_ptr[cells + 1] - scr.cell_ptr[cells]).sum())
        total = ll * (n_units / len(units))
        if leavs and screen.n0 > 0:
            if method == "conventional":
                lp0 = single_leavs_log_p0(f_mc, phi, screen.threshold)
            else:
                lp0 = leavs_log_p0(f_mc, moi, phi, screen.threshold, leavs_estimator,
                                   generator=gen)
            total = total + n0_eff * lp0
        if l1 > 0:
            total = total - l1 * screen.n_cells * f_mc.mean()
        return -total / scale_total, n_seq

    @torch.no_grad()
    def validation() -> float:
        """Held-out objective per unit: the validation cells' (or pairs') NB log-likelihood
        plus their share of the LeaVS / L1 terms on a fixed Monte Carlo sample, so early
        stopping watches the quantity being optimised (the sorted-cell likelihood alone
        worsens while LeaVS pulls f down on the unsorted majority)."""
        if len(val_cells) == 0:
            return float("nan")
        phi = log_phi.exp()
        if method == "conventional":
            f = torch.cat([evaluate_unique(net, scr.tokens, c) for c in val_x.split(8192)])
            ll = nb_log_prob(val_y, f, phi).sum()
            n_units_val = len(val_x)
        else:
            lls = []
            for chunk in val_dev.split(2048):
                mean, _ = pooled_mean(net, scr, chunk, dedupe=dedupe)
                lls.append(nb_log_prob(scr.y[chunk], mean, phi))
            ll = torch.cat(lls).sum()
            n_units_val = len(val_cells)
        share = len(val_cells) / screen.n_sorted
        n0_val = screen.n0 * share
        total = ll
        if need_mc:
            f_mc = net(trim(val_mc))
            if leavs and screen.n0 > 0:
                if method == "conventional":
                    lp0 = single_leavs_log_p0(f_mc, phi, screen.threshold)
                else:
                    lp0 = leavs_log_p0(f_mc, moi, phi, screen.threshold, leavs_estimator,
                                       generator=torch.Generator().manual_seed(seed))
                total = total + n0_val * lp0
            if l1 > 0:
                total = total - l1 * screen.n_cells * share * f_mc.mean()
        return float(-total / (n_units_val + n0_val))

    history: dict[str, list[float]] = {"step": [], "loss": [], "val": [], "phi": []}
    best = (math.inf, 0, copy.deepcopy(net.state_dict()), float(log_phi.detach()))
    bad = 0
    seen_seq = seen_cells = 0
    perm, pos = torch.randperm(n_units, generator=gen), 0
    t0 = time.perf_counter()
    running = 0.0
    net.train()
    # tqdm only when asked: importing it in a notebook can print a widget warning
    iterator = progress(range(1, steps + 1), desc=f"fit {method}") if show_progress else range(
        1, steps + 1
    )
    for step in iterator:
        if pos + unit_batch > n_units:
            perm, pos = torch.randperm(n_units, generator=gen), 0
        units = perm[pos : pos + unit_batch].to(dev)
        pos += unit_batch
        loss, n_seq = objective(units)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        seen_seq += n_seq
        seen_cells += len(units) if method == "lift" else 0
        if step % eval_every == 0 or step == steps:
            val = validation()
            history["step"].append(step)
            history["loss"].append(running / (step - (history["step"][-2] if len(
                history["step"]) > 1 else 0)))
            history["val"].append(val)
            history["phi"].append(float(log_phi.detach().exp()))
            running = 0.0
            if not val < best[0] - 1e-4 and not math.isnan(val):
                bad += 1
                if bad >= patience:
                    break
            else:
                bad = 0
                best = (val, step, copy.deepcopy(net.state_dict()), float(log_phi.detach()))
    seconds = time.perf_counter() - t0
    if len(val_cells) and best[0] < math.inf:
        net.load_state_dict(best[2])
        phi_final = math.exp(best[3])
    else:
        phi_final = float(log_phi.detach().exp())
    net.eval()
    return FitResult(
        net=net,
        phi=phi_final,
        method=method,
        history=history,
        best_step=best[1],
        seconds=seconds,
        sequences_seen=seen_seq,
        cells_seen=seen_cells,
    )


def fit_lift(screen: Screen, library: SequenceLibrary, **kw) -> FitResult:
    """Train f_theta with LIFT on a sorted pooled screen (LIFT eq. 6 + App. D eq. 36, eq. 7).

    Parameters
    ----------
    screen
        The sorted screen (CSR).
    library
        The library p(x): its samples feed the Monte Carlo terms (a pool of ``mc_pool``
        samples is drawn once; each step uses ``n_mc`` of them).
    moi
        MOI for the LeaVS term; defaults to ``screen.moi`` (known) or pass an estimate.
    leavs
        Add the LeaVS term N0 log P(y <= tau) (eq. 36). ``leavs=False, l1=0`` is the
        "no regularisation" ablation.
    l1
        Weight of the explicit functional L1 penalty (eq. 3, 7), per screened cell:
        gamma = l1 * n_cells. Default 0 (LeaVS already regularises, eq. 37-39).
    net, net_kw
        A :class:`~liftkit.lift.nets.SeqCNN` to train, or keyword arguments to build one.
    steps, batch_size, lr
        Adam steps, cells per minibatch, learning rate.
    n_mc, mc_pool, leavs_estimator
        Monte Carlo sizes and estimator (see :func:`leavs_log_p0`).
    phi_init, learn_phi
        NB dispersion start and whether it is learned (it is, by default).
    val_frac, eval_every, patience
        Early stopping on the held-out objective (NB log-likelihood of held-out sorted cells
        plus their share of the LeaVS / L1 terms, fixed Monte Carlo sample): evaluate every
        ``eval_every`` steps, stop after ``patience`` evaluations without improvement, keep
        the best weights.
    dedupe
        Evaluate each distinct sequence of a minibatch once.
    device, seed, show_progress
        ``"auto"`` picks CUDA when present; the seed fixes the split, batches and init.
    """
    return _fit(screen, library, "lift", **kw)


def fit_conventional(screen: Screen, library: SequenceLibrary, **kw) -> FitResult:
    """Conventional training: every sorted cell split into pairs (x_ij, y_i) (LIFT Sec. 6).

    Same network, NB likelihood and optimiser as :func:`fit_lift`; the LeaVS term is the
    single-sequence one, N0 log E_p[P(y <= tau | f(x))] (a choice, S). A minibatch holds
    ``batch_size * mean sequences per cell`` pairs so both methods see the same number of
    sequences per step. Keyword arguments as :func:`fit_lift` (``moi`` is unused).
    """
    kw.pop("moi", None)
    return _fit(screen, library, "conventional", **kw)


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


# ---------------------------------------------------------------------------------------------
# Evaluation (App. C)
# ---------------------------------------------------------------------------------------------


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
    s0: float = 0.1,
    mult: float = 10.0,
    patterns=DEFAULT_PATTERNS,
    compound: bool = True,
    phi: float = PHI,
    label_threshold: float = 10.0,
    generator: torch.Generator | None = None,
) -> TestSet:
    """Fresh single sequences from the library, tested one per cell (LIFT App. C evaluation)."""
    if n < 1:
        raise ValueError(f"test set size must be >= 1, got {n}")
    tokens = library.sample(n, generator)
    strength = motif_strength(tokens, s0=s0, mult=mult, patterns=patterns, compound=compound)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    y = torch.from_numpy(sample_activity(strength, phi=phi, rng=rng)).float()
    return TestSet(tokens=tokens, y=y, strength=strength, label=y > label_threshold)


def evaluate(model: FitResult | torch.nn.Module, test: TestSet) -> float:
    """PR AUC (average precision) of f_theta for the label y > 10 on held-out sequences."""
    return pr_auc(test.label, predict(model, test.tokens))


# ---------------------------------------------------------------------------------------------
# The synthetic MOI experiment (LIFT Sec. 6, Figure 2; App. C)
# ---------------------------------------------------------------------------------------------

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


def moi_experiment(
    library: SequenceLibrary,
    mois=(0.1, 0.3, 1.0, 3.0, 10.0),
    n_cells: int = 2000,
    replicates: int = 2,
    methods=("LIFT", "conventional"),
    *,
    s0: float = 0.1,
    mult: float = 10.0,
    patterns=DEFAULT_PATTERNS,
    compound: bool = True,
    threshold: float = 0.0,
    phi: float = PHI,
    n_test: int = 20000,
    test: TestSet | None = None,
    fit_kw: dict | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    curve_moi: float | None = None,
) -> ExperimentResult:
    """Run the synthetic experiment of LIFT Figure 2 (App. C) on a grid of MOIs.

    For every MOI and replicate a fresh screen of ``n_cells`` cells is simulated (the number of
    cells is fixed across MOIs, as in the paper), each method in ``methods`` (keys of
    :data:`METHODS`) is trained on it, and scored by PR AUC on one held-out test set of
    ``n_test`` single sequences (label y > 10), shared by every MOI and replicate (for a pooled
    :class:`~liftkit.lift.library.CDRH3Library` it comes from an independent OLGA pool).

    Returns
    -------
    ExperimentResult
        ``table`` has one row per (MOI, replicate, method); ``curves`` maps method to the
        precision-recall curve of replicate 0 at ``curve_moi`` (default: the largest MOI).
    """
    import pandas as pd

    from liftkit.metrics import pr_curve

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {list(METHODS)}")
    if replicates < 1 or len(mois) == 0:
        raise ValueError("need at least one MOI and one replicate")
    oracle = dict(s0=s0, mult=mult, patterns=patterns, compound=compound)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    if test is None:
        test_lib = library
        if isinstance(library, CDRH3Library) and library.pool_size is not None:
            # a pooled OLGA library: draw test sequences from an independent pool, so they are
            # fresh draws from OLGA rather than repeats of the screen's pool
            test_lib = CDRH3Library(library.max_len, library.pool_size, library.pool_seed + 1)
        test = make_test_set(test_lib, n_test, phi=phi, generator=gen, **oracle)
    has_pos = bool(test.label.any())
    curve_moi = max(mois) if curve_moi is None else curve_moi
    rows, curves = [], {}
    for moi in mois:
        for rep in range(replicates):
            g = torch.Generator().manual_seed(seed * 100_003 + rep * 1009 + int(moi * 1000))
            screen = simulate_screen(library, n_cells, moi, phi=phi, threshold=threshold,
                                     generator=g, **oracle)
            for method in methods:
                fit, extra = METHODS[method]
                row = dict(moi=moi, replicate=rep, method=method, n_sorted=screen.n_sorted,
                           n0=screen.n0)
                if screen.n_sorted < 10:  # too few sequenced cells to train on
                    row.update(pr_auc=float("nan"), seconds=0.0, best_step=0)
                    rows.append(row)
                    continue
                res = fit(screen, library, **{**(fit_kw or {}), **extra}, seed=seed + rep,
                          device=device, show_progress=False)
                scores = predict(res, test.tokens)
                # PR AUC is undefined without a positive test label (tiny tests, tiny s0): NaN
                auc = pr_auc(test.label, scores) if has_pos else float("nan")
                row.update(pr_auc=auc, seconds=res.seconds, best_step=res.best_step, phi=res.phi)
                rows.append(row)
                if moi == curve_moi and rep == 0 and has_pos:
                    curves[method] = pr_curve(test.label, scores)
    return ExperimentResult(pd.DataFrame(rows), curves, test, time.perf_counter() - t0)

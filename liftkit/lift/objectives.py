"""Training objectives: LIFT on pooled cells and conventional training on pairs (LIFT eq. 6, 7, 36).

LIFT (eq. 6 with NB noise, plus App. D) maximises

    sum_{i sorted} log NB(y_i | sum_j f(x_ij), phi)  +  N0 log P(y <= tau)  -  gamma ||f||_{L1(p)}

where the second term is the LeaVS correction (eq. 36: the probability that a cell built from
library samples at the screen's MOI is not sorted) and the third the explicit functional L1
penalty (eq. 3, 7; off by default since LeaVS already acts as it, eq. 37-39). ``leavs=False``
and ``l1=0`` is the paper's "no regularisation" ablation.

Conventional training splits every sorted cell into pairs (x_ij, y_i) and fits the same network
with the same NB likelihood and the single-sequence LeaVS term N0 log E_p[P(y <= tau | f(x))].

Minibatch scaling: a minibatch of B of the n_train training units (cells, or pairs)
contributes (n_train / B) * sum_b log NB(...), an unbiased estimate of the full data term; the
global LeaVS term enters every step whole, with N0 scaled by the training fraction
(n_train cells / n_sorted) so that the ratio of sorted to unsorted cells is that of the screen;
the L1 term enters whole. The total is divided by n_train + N0 (a constant) so learning rates do
not depend on the screen size. All per-cell sums are vectorised: the sequences of a minibatch are
flattened, deduplicated, f is evaluated once, and ``index_add`` sums them per cell.

An objective owns the network, the NB dispersion, the train / validation split and the Monte
Carlo pool; the loop of :mod:`liftkit.lift.train` only calls :meth:`Objective.loss` and
:meth:`Objective.validation`, so a new objective is a new subclass here, not a change there.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch

from liftkit.lift.library import PAD, SequenceLibrary
from liftkit.lift.screen import Screen, gather_entries
from liftkit.stats import nb_log_cdf, nb_log_prob

# ---------------------------------------------------------------------------------------------
# LeaVS terms (App. D)
# ---------------------------------------------------------------------------------------------


def leavs_log_p0(
    f_mc: torch.Tensor,
    moi: float,
    phi: torch.Tensor | float,
    threshold: float = 0.0,
    estimator: str = "auto",
    n_cells_mc: int | None = None,
    generator: torch.Generator | None = None,
    noise: str = "sequence",
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
        ``"pgf"``: the number of sequences is integrated out exactly (Poisson PGF: the
        per-sequence NB variant of eq. 38 in the Derivations appendix) and only x is sampled: log P(y=0) = -MOI * mean_l [1 - (1 + f(x_l)/phi)^-phi].
        Exact in expectation for per-sequence NB noise and tau = 0 (the simulator of App. C).
        ``"cells"``: the literal eq. 36: simulate ``n_cells_mc`` cells with Poisson(MOI)
        sequences drawn from ``f_mc`` and average P(y <= tau | cell); per-sequence NB when
        tau = 0, else a cell-level NB(sum f) CDF (the likelihood's noise model, eq. 6).
        ``"auto"``: ``"pgf"`` when tau = 0 and ``noise="sequence"``, else ``"cells"``.
    n_cells_mc
        Simulated cells for ``"cells"`` (default ``max(len(f_mc), 256)``).
    generator
        Torch generator of the ``"cells"`` estimator's Poisson counts and picks.
    noise
        p_noise inside eq. 36. ``"sequence"``: each sequence of the cell draws its own
        NB(f(x_j), phi) and the cell reports the sum (the simulator of App. C). ``"cell"``:
        one NB(sum_j f(x_j), phi) per cell, the noise model of the data term (eq. 6), so that
        both terms of the objective use one likelihood. The paper's eq. 36 writes one
        P_noise for both; which one its code used is not stated (S). With ``"cell"`` the
        estimator is always ``"cells"`` (no closed form; the exact value is a 1-D integral
        over the NB's gamma mixing variable).

    Returns
    -------
    torch.Tensor
        Scalar log P(y <= tau); for small f it approaches -MOI ||f||_{L1(p)} (eq. 37-39).
    """
    if moi <= 0:
        raise ValueError(f"moi must be > 0, got {moi}")
    if noise not in ("sequence", "cell"):
        raise ValueError(f"unknown LeaVS noise {noise!r}: use 'sequence' or 'cell'")
    if estimator == "auto":
        estimator = "pgf" if threshold == 0 and noise == "sequence" else "cells"
    phi_t = torch.as_tensor(phi, dtype=f_mc.dtype, device=f_mc.device)
    # log P(y_seq = 0) for one sequence with per-sequence NB noise
    log_g = -phi_t * torch.log1p(f_mc / phi_t)
    if estimator == "pgf":
        if threshold != 0 or noise != "sequence":
            raise ValueError("the 'pgf' LeaVS estimator needs threshold 0 and per-sequence "
                             "noise: use estimator='cells'")
        return -moi * (1 - torch.exp(log_g)).mean()
    if estimator != "cells":
        raise ValueError(f"unknown LeaVS estimator {estimator!r}: use 'auto', 'pgf' or 'cells'")
    n = max(len(f_mc), 256) if n_cells_mc is None else int(n_cells_mc)
    counts = torch.poisson(torch.full((n,), float(moi)), generator=generator).long()
    total = int(counts.sum())
    pick = torch.randint(0, len(f_mc), (total,), generator=generator).to(f_mc.device)
    owner = torch.repeat_interleave(torch.arange(n), counts).to(f_mc.device)
    if threshold == 0 and noise == "sequence":
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
    """Single-sequence LeaVS term log E_p[P(y <= tau | f(x))] of conventional training.

    The analogue of eq. 36 for a model that sees one sequence per cell: each Monte Carlo sample
    x_l ~ p is a "cell" of one sequence with NB(f(x_l), phi) noise (a choice, S).
    """
    phi_t = torch.as_tensor(phi, dtype=f_mc.dtype, device=f_mc.device)
    log_cell = nb_log_cdf(threshold, f_mc.clamp_min(1e-10), phi_t)
    return torch.logsumexp(log_cell, 0) - math.log(len(f_mc))


# ---------------------------------------------------------------------------------------------
# Pooled forward (eq. 6)
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
    """sum_j f(x_ij) for a minibatch of sorted cells, vectorised (the NB mean of LIFT eq. 6).

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
    """Reference for tests and the benchmark: one network call per cell (what
    :func:`pooled_mean` vectorises)."""
    out = []
    for c in cells.tolist():
        sid = screen.seq_idx[screen.cell_ptr[c] : screen.cell_ptr[c + 1]]
        out.append(net(screen.tokens[sid]).sum())
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


class StepLoss(NamedTuple):
    """One minibatch's loss and what it consumed (for the throughput record)."""

    value: torch.Tensor  # scalar to minimise
    sequences: int  # (cell, sequence) entries or pairs in the minibatch
    cells: int  # pooled cells in the minibatch (0 when the units are pairs)


class Snapshot(NamedTuple):
    """Fitted values at one step: network weights and log phi (restored after early stopping)."""

    net_state: dict
    log_phi: float


def _device_of(net: torch.nn.Module) -> torch.device:
    param = next(iter(net.parameters()), None)
    return torch.device("cpu") if param is None else param.device


class Objective(ABC):
    """What the training loop needs: a network, units to batch, a loss and a validation value.

    Every objective here fits f_theta and the NB dispersion phi of eq. 6 (``log_phi``, learned
    unless ``learn_phi=False``). Subclasses set :attr:`name`, :attr:`n_units` (training units)
    and :attr:`batch_units` (units per minibatch) and implement :meth:`loss` and
    :meth:`validation`.

    Parameters
    ----------
    net
        The network f_theta, already on its device (a compiled module is fine).
    generator
        Torch generator of every random draw of the fit (the loop draws its minibatches from it).
    phi_init, learn_phi
        NB dispersion start and whether it is learned.
    """

    name: str = "objective"
    n_units: int
    batch_units: int

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        generator: torch.Generator | None = None,
        phi_init: float = 1.0,
        learn_phi: bool = True,
    ) -> None:
        self.net = net
        self.generator = generator
        self.device = _device_of(net)
        self.learn_phi = learn_phi
        self.log_phi = torch.tensor(math.log(phi_init), device=self.device, requires_grad=learn_phi)

    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimiser updates: the network's, then log phi if learned."""
        return list(self.net.parameters()) + ([self.log_phi] if self.learn_phi else [])

    @property
    def phi(self) -> float:
        """The current NB dispersion."""
        return float(self.log_phi.detach().exp())

    def snapshot(self) -> Snapshot:
        """A copy of the fitted values (weights and log phi)."""
        return Snapshot(copy.deepcopy(self.net.state_dict()), float(self.log_phi.detach()))

    def restore(self, snap: Snapshot) -> float:
        """Load a :meth:`snapshot`; returns its NB dispersion phi."""
        self.net.load_state_dict(snap.net_state)
        with torch.no_grad():
            self.log_phi.fill_(snap.log_phi)
        return math.exp(snap.log_phi)

    @abstractmethod
    def loss(self, units: torch.Tensor) -> StepLoss:
        """Minibatch estimate of the objective to minimise, on training units ``units``."""

    @abstractmethod
    def validation(self) -> float:
        """The objective on held-out units (NaN when there are none); lower is better."""


def _check_screen(screen: Screen, min_cells: int = 2) -> None:
    if screen.n_sorted < min_cells:
        raise ValueError(
            f"the screen has {screen.n_sorted} sequenced cells (need >= {min_cells}): "
            "screen more cells, raise the MOI or lower the sorting threshold"
        )


def validation_size(n: int, val_frac: float, val_min: int = 100) -> int:
    """Validation cells out of n sorted cells: ``max(val_frac * n, min(val_min, n // 2))``.

    The floor ``val_min`` (S) keeps early stopping from watching a handful of cells on small
    screens (10% of 40 sorted cells is 4); it never takes more than half the cells. With
    ``val_frac = 0`` there is no validation set. Training always keeps >= 1 cell.
    """
    if not 0 <= val_frac < 1:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    if val_min < 0:
        raise ValueError(f"val_min must be >= 0, got {val_min}")
    if val_frac == 0:
        return 0
    n_val = max(int(round(val_frac * n)), min(int(val_min), n // 2), 1)
    return min(n_val, n - 1)


def _split_cells(
    n: int, val_frac: float, gen: torch.Generator, val_min: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (train, validation) split of n sorted cells (sizes: :func:`validation_size`)."""
    n_val = validation_size(n, val_frac, val_min)
    perm = torch.randperm(n, generator=gen)
    return perm[n_val:], perm[:n_val]


class ScreenObjective(Objective):
    """NB likelihood of a sorted screen + LeaVS (eq. 36) + L1 (eq. 7), per unit (see module doc).

    Holds what LIFT and conventional training share: the random split of the sorted cells into
    training and validation cells, the unsorted count N0 (scaled to the training fraction), and a
    pool of ``mc_pool`` library samples drawn once, from which every step takes ``n_mc`` for the
    Monte Carlo terms and validation uses a fixed slice. Subclasses define the units (cells or
    pairs) through :meth:`_data_term`, :meth:`_val_log_lik` and :meth:`_log_p0`.

    Parameters
    ----------
    screen
        The sorted screen (CSR).
    library
        The library p(x) of the Monte Carlo terms.
    net, generator, phi_init, learn_phi
        As :class:`Objective`.
    leavs
        Add the LeaVS term N0 log P(y <= tau) (eq. 36).
    l1
        Weight of the explicit functional L1 penalty (eq. 3, 7) per screened cell:
        gamma = l1 * n_cells. Default 0 (LeaVS already regularises, eq. 37-39).
    batch_size
        Cells per minibatch (conventional training converts it to pairs).
    n_mc, mc_pool
        Monte Carlo samples per step and the size of the pool they are drawn from.
    val_frac, val_min
        Fraction of sorted cells held out for validation (early stopping), and the floor in
        cells of that set (see :func:`validation_size`).
    dedupe
        Evaluate each distinct sequence of a minibatch once.
    seed
        Seed of the fixed generator of the validation LeaVS estimate.
    """

    def __init__(
        self,
        screen: Screen,
        library: SequenceLibrary,
        net: torch.nn.Module,
        *,
        generator: torch.Generator | None = None,
        leavs: bool = True,
        l1: float = 0.0,
        batch_size: int = 128,
        n_mc: int = 512,
        mc_pool: int = 20000,
        phi_init: float = 1.0,
        learn_phi: bool = True,
        val_frac: float = 0.1,
        val_min: int = 100,
        dedupe: bool = True,
        seed: int = 0,
    ) -> None:
        _check_screen(screen)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(net, generator=generator, phi_init=phi_init, learn_phi=learn_phi)
        self.screen, self.l1, self.n_mc, self.dedupe, self.seed = screen, l1, n_mc, dedupe, seed
        self.batch_size = batch_size
        # draws in a fixed order (split, then pool): the seed fixes both
        self.train_cells, self.val_cells = _split_cells(screen.n_sorted, val_frac, generator,
                                                           val_min)
        self.scr = screen.to(self.device)
        self.n0_eff = screen.n0 * len(self.train_cells) / screen.n_sorted
        self.use_leavs = leavs and screen.n0 > 0
        self.need_mc = self.use_leavs or l1 > 0
        self.pool = library.sample(mc_pool, generator).to(self.device) if self.need_mc else None
        # a fixed validation sample, so validation values are comparable across evaluations
        self.val_mc = self.pool[: min(len(self.pool), 2048)] if self.need_mc else None

    @abstractmethod
    def _data_term(
        self, units: torch.Tensor, phi: torch.Tensor, mc: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        """(sum of NB log-likelihoods of the units, f on ``mc``, sequences, cells)."""

    @abstractmethod
    def _val_log_lik(self, phi: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(sum of NB log-likelihoods of the validation units, their number)."""

    @abstractmethod
    def _log_p0(
        self, f_mc: torch.Tensor, phi: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The LeaVS log-probability that a cell is not sorted, from f on library samples."""

    def _mc_batch(self) -> torch.Tensor | None:
        if not self.need_mc:
            return None
        pick = torch.randint(0, len(self.pool), (self.n_mc,), generator=self.generator)
        return self.pool[pick.to(self.device)]

    def loss(self, units: torch.Tensor) -> StepLoss:
        """-(scaled data term + N0' log P(y <= tau) - gamma ||f||_1) / (n_units + N0'), eqs. 6, 36, 7."""
        phi = self.log_phi.exp()
        mc = self._mc_batch()
        ll, f_mc, n_seq, n_cells = self._data_term(units, phi, mc)
        total = ll * (self.n_units / len(units))
        if self.use_leavs:
            total = total + self.n0_eff * self._log_p0(f_mc, phi, self.generator)
        if self.l1 > 0:
            total = total - self.l1 * self.screen.n_cells * f_mc.mean()
        return StepLoss(-total / (self.n_units + self.n0_eff), n_seq, n_cells)

    @torch.no_grad()
    def validation(self) -> float:
        """Held-out objective per unit: the validation units' NB log-likelihood plus their share
        of the LeaVS / L1 terms on a fixed Monte Carlo sample, so early stopping watches the
        quantity being optimised (the sorted-cell likelihood alone worsens while LeaVS pulls f
        down on the unsorted majority)."""
        if len(self.val_cells) == 0:
            return float("nan")
        phi = self.log_phi.exp()
        ll, n_val = self._val_log_lik(phi)
        share = len(self.val_cells) / self.screen.n_sorted
        n0_val = self.screen.n0 * share
        total = ll
        if self.need_mc:
            f_mc = self.net(trim(self.val_mc))
            if self.use_leavs:
                # a fresh generator with a fixed seed: the same Monte Carlo draw every time
                fixed = torch.Generator().manual_seed(self.seed)
                total = total + n0_val * self._log_p0(f_mc, phi, fixed)
            if self.l1 > 0:
                total = total - self.l1 * self.screen.n_cells * share * f_mc.mean()
        return float(-total / (n_val + n0_val))


class LiftObjective(ScreenObjective):
    """LIFT: units are sorted cells, y_i ~ NB(sum_j f(x_ij), phi) (eq. 6), LeaVS of eq. 36.

    Parameters
    ----------
    moi
        MOI of the LeaVS term; defaults to ``screen.moi`` (known) or pass an estimate.
    leavs_estimator, leavs_noise
        Estimator of eq. 36 and its noise model (see :func:`leavs_log_p0`): ``"sequence"``
        (default: per-sequence NB, the simulator's noise, exact PGF at tau = 0) or ``"cell"``
        (the data term's cell-level NB, one likelihood for both terms).
    **kw
        As :class:`ScreenObjective`.
    """

    name = "lift"

    def __init__(
        self,
        screen: Screen,
        library: SequenceLibrary,
        net: torch.nn.Module,
        *,
        moi: float | None = None,
        leavs_estimator: str = "auto",
        leavs_noise: str = "sequence",
        **kw,
    ) -> None:
        moi = screen.moi if moi is None else float(moi)
        if moi <= 0:
            raise ValueError(f"moi must be > 0, got {moi}")
        super().__init__(screen, library, net, **kw)
        if leavs_noise not in ("sequence", "cell"):
            raise ValueError(f"unknown LeaVS noise {leavs_noise!r}: use 'sequence' or 'cell'")
        self.moi, self.leavs_estimator, self.leavs_noise = moi, leavs_estimator, leavs_noise
        self.n_units = len(self.train_cells)
        self.batch_units = min(self.batch_size, self.n_units)
        self.train_dev = self.train_cells.to(self.device)
        self.val_dev = self.val_cells.to(self.device)

    def _data_term(self, units, phi, mc):
        cells = self.train_dev[units]
        # f on the MC samples rides along in the same network call
        mean, f_mc = pooled_mean(self.net, self.scr, cells, dedupe=self.dedupe, extra_tokens=mc)
        ll = nb_log_prob(self.scr.y[cells], mean, phi).sum()
        n_seq = int((self.scr.cell_ptr[cells + 1] - self.scr.cell_ptr[cells]).sum())
        return ll, f_mc, n_seq, len(units)

    def _val_log_lik(self, phi):
        lls = []
        for chunk in self.val_dev.split(2048):  # bounds memory on large validation sets
            mean, _ = pooled_mean(self.net, self.scr, chunk, dedupe=self.dedupe)
            lls.append(nb_log_prob(self.scr.y[chunk], mean, phi))
        return torch.cat(lls).sum(), len(self.val_cells)

    def _log_p0(self, f_mc, phi, generator):
        return leavs_log_p0(f_mc, self.moi, phi, self.screen.threshold, self.leavs_estimator,
                            generator=generator, noise=self.leavs_noise)


class ConventionalObjective(ScreenObjective):
    """Conventional training: units are pairs (x_ij, y_i) with y_i ~ NB(f(x_ij), phi) (Sec. 6).

    Every sorted cell is split into one pair per sequence; the LeaVS term is the single-sequence
    one, N0 log E_p[P(y <= tau | f(x))] (:func:`single_leavs_log_p0`, a choice, S). A minibatch
    holds ``batch_size * mean sequences per cell`` pairs so both methods see the same number of
    sequences per step. Parameters as :class:`ScreenObjective` (the MOI is not used).
    """

    name = "conventional"

    def __init__(
        self, screen: Screen, library: SequenceLibrary, net: torch.nn.Module, **kw
    ) -> None:
        super().__init__(screen, library, net, **kw)
        self.pair_x, self.pair_y = (t.to(self.device) for t in screen.pairs(self.train_cells))
        self.val_x, self.val_y = (t.to(self.device) for t in screen.pairs(self.val_cells))
        self.n_units = len(self.pair_x)
        mean_seqs = float(screen.seqs_per_cell().double().mean())
        self.batch_units = min(max(1, int(round(self.batch_size * mean_seqs))), self.n_units)

    def _data_term(self, units, phi, mc):
        xi = self.pair_x[units]
        if self.dedupe:
            uniq, inverse = torch.unique(xi, return_inverse=True)
        else:
            uniq, inverse = xi, torch.arange(len(xi), device=xi.device)
        toks = self.scr.tokens[uniq] if mc is None else torch.cat([self.scr.tokens[uniq], mc])
        f = self.net(trim(toks))
        ll = nb_log_prob(self.pair_y[units], f[: len(uniq)][inverse], phi).sum()
        return ll, f[len(uniq) :], len(xi), 0

    def _val_log_lik(self, phi):
        chunks = self.val_x.split(8192)  # bounds memory on large validation sets
        f = torch.cat([evaluate_unique(self.net, self.scr.tokens, c) for c in chunks])
        return nb_log_prob(self.val_y, f, phi).sum(), len(self.val_x)

    def _log_p0(self, f_mc, phi, generator):
        return single_leavs_log_p0(f_mc, phi, self.screen.threshold)

"""One training loop over a named objective, and the LIFT and conventional fits (LIFT Sec. 4, 6).

:func:`train` runs Adam on minibatches of an :class:`~liftkit.lift.objectives.Objective`'s units,
evaluates its validation value every ``eval_every`` steps, stops after ``patience`` evaluations
without improvement and restores the best weights. It knows nothing of the method: the objective
defines the units, the loss (LIFT eq. 6 + 36 + 7, or the pair likelihood of conventional
training) and the validation value. :func:`fit_lift` and :func:`fit_conventional` build the
network and the objective, then call the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from liftkit.lift.library import SequenceLibrary
from liftkit.lift.nets import SeqCNN
from liftkit.lift.objectives import (
    ConventionalObjective,
    LiftObjective,
    Objective,
    ScreenObjective,
    Snapshot,
)
from liftkit.lift.screen import Screen
from liftkit.utils import progress, resolve_device


@dataclass
class FitResult:
    """A trained network and its training record.

    Attributes
    ----------
    net
        The network, with the best weights restored, in eval mode.
    phi
        The NB dispersion at the best step.
    method
        The objective's name (``"lift"``, ``"conventional"``).
    history
        Per evaluation: ``step``, mean training ``loss`` since the last one, validation ``val``
        and ``phi``.
    best_step
        The step whose weights were kept.
    steps_run, budget_steps
        Steps taken, and the budget (``epochs`` converted to steps).
    bound
        True when the budget ended the fit: early stopping had not fired, so the fit may not
        have converged (the chapters flag such fits).
    epochs_run
        Passes over the training units taken (``steps_run * batch_units / n_units``).
    seconds, cpu_seconds, sequences_seen, cells_seen
        Wall and CPU time (``time.process_time``) of the loop and what the minibatches held
        (throughput record).
    """

    net: torch.nn.Module
    phi: float
    method: str
    history: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    steps_run: int = 0
    budget_steps: int = 0
    bound: bool = False
    epochs_run: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sequences_seen: int = 0
    cells_seen: int = 0

    @property
    def sequences_per_second(self) -> float:
        return self.sequences_seen / max(self.seconds, 1e-9)

    @property
    def cells_per_second(self) -> float:
        return self.cells_seen / max(self.seconds, 1e-9)


@dataclass
class _Best:
    value: float
    step: int
    snapshot: Snapshot


def _minibatches(
    n_units: int, batch: int, generator: torch.Generator | None, device: torch.device
) -> Iterator[torch.Tensor]:
    """Endless minibatches of unit indices: a fresh permutation whenever the current one cannot
    fill a batch (its remainder is dropped, so every batch has the same size)."""
    perm, pos = torch.randperm(n_units, generator=generator), 0
    while True:
        if pos + batch > n_units:
            perm, pos = torch.randperm(n_units, generator=generator), 0
        yield perm[pos : pos + batch].to(device)
        pos += batch


def _steps(steps: int, show_progress: bool, desc: str) -> Iterable[int]:
    # tqdm only when asked: importing it in a notebook can print a widget warning
    return progress(range(1, steps + 1), desc=desc) if show_progress else range(1, steps + 1)


def budget_steps(n_units: int, batch_units: int, epochs: float | None, steps: int | None) -> int:
    """The step budget: ``steps`` when given, else ``epochs`` passes over the training units.

    One epoch is ``ceil(n_units / batch_units)`` minibatch steps (every batch is full, see
    :func:`_minibatches`). The budget in epochs is our choice (S): the paper trains "until
    convergence" without stating a budget; an epoch budget scales with the screen, a step
    budget does not.
    """
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return int(steps)
    if epochs is None or epochs <= 0:
        raise ValueError(f"epochs must be > 0 (passes over the training units), got {epochs}")
    return max(1, math.ceil(epochs * math.ceil(n_units / max(batch_units, 1))))


def default_eval_every(n_units: int, batch_units: int, lo: int = 10, hi: int = 100) -> int:
    """Steps between validations: one epoch, clipped to ``[lo, hi]`` steps (S)."""
    return int(min(max(math.ceil(n_units / max(batch_units, 1)), lo), hi))


@dataclass
class _Record:
    """What the loop accumulates between evaluations."""

    history: dict[str, list[float]] = field(
        default_factory=lambda: {"step": [], "loss": [], "val": [], "phi": []})
    running: float = 0.0
    last: int = 0
    bad: int = 0
    seen_seq: int = 0
    seen_cells: int = 0

    def log(self, step: int, val: float, phi: float) -> None:
        for key, value in zip(("step", "loss", "val", "phi"),
                              (step, self.running / (step - self.last), val, phi), strict=True):
            self.history[key].append(value)  # loss: mean since the last evaluation
        self.running, self.last = 0.0, step


def train(
    objective: Objective,
    *,
    epochs: float | None = 200.0,
    steps: int | None = None,
    lr: float = 3e-3,
    eval_every: int | None = None,
    patience: int = 8,
    min_delta: float = 1e-4,
    show_progress: bool = True,
) -> FitResult:
    """Minimise an objective with Adam and early stopping; the best weights are restored.

    Parameters
    ----------
    objective
        Defines the units, :meth:`~liftkit.lift.objectives.Objective.loss` and
        :meth:`~liftkit.lift.objectives.Objective.validation`; its generator also draws the
        minibatches, so one seed fixes the whole fit.
    epochs, steps
        The budget: ``epochs`` passes over the training units (cells for LIFT, pairs for
        conventional training), or ``steps`` Adam steps when given (see :func:`budget_steps`).
    lr
        Adam learning rate.
    eval_every, patience, min_delta
        Evaluate the validation value every ``eval_every`` steps (default: one epoch, see
        :func:`default_eval_every`) and at the last step; stop after ``patience`` evaluations
        without an improvement of ``min_delta``. A fit that runs out of budget before early
        stopping fires is recorded as ``bound``.
    show_progress
        A progress bar (also subject to ``LIFTKIT_PROGRESS``).
    """
    n_steps = budget_steps(objective.n_units, objective.batch_units, epochs, steps)
    every = eval_every or default_eval_every(objective.n_units, objective.batch_units)
    opt = torch.optim.Adam(objective.parameters(), lr=lr)
    best, rec = _Best(math.inf, 0, objective.snapshot()), _Record()
    batches = _minibatches(objective.n_units, objective.batch_units, objective.generator,
                           objective.device)
    stopped, step = False, 0
    t0, c0 = time.perf_counter(), time.process_time()
    objective.net.train()
    for step in _steps(n_steps, show_progress, f"fit {objective.name}"):
        out = objective.loss(next(batches))
        opt.zero_grad(set_to_none=True)
        out.value.backward()
        opt.step()
        rec.running += float(out.value.detach())
        rec.seen_seq, rec.seen_cells = rec.seen_seq + out.sequences, rec.seen_cells + out.cells
        if step % every != 0 and step != n_steps:
            continue
        val = objective.validation()
        rec.log(step, val, objective.phi)
        # NaN (no validation units) counts as an improvement: the last weights are kept
        if val < best.value - min_delta or math.isnan(val):
            rec.bad, best = 0, _Best(val, step, objective.snapshot())
        else:
            rec.bad += 1
            if rec.bad >= patience:
                stopped = True
                break
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # without validation best.value is NaN: nothing to restore
    phi = objective.restore(best.snapshot) if best.value < math.inf else objective.phi
    objective.net.eval()
    return FitResult(net=objective.net, phi=phi, method=objective.name, history=rec.history,
                     best_step=best.step, steps_run=step, budget_steps=n_steps,
                     bound=not stopped, epochs_run=step * objective.batch_units
                     / max(objective.n_units, 1), seconds=seconds, cpu_seconds=cpu,
                     sequences_seen=rec.seen_seq, cells_seen=rec.seen_cells)


def _fit(
    kind: type[ScreenObjective],
    screen: Screen,
    library: SequenceLibrary,
    net: torch.nn.Module | None,
    net_kw: dict | None,
    device: str | torch.device,
    seed: int,
    loop_kw: dict[str, Any],
    objective_kw: dict[str, Any],
) -> FitResult:
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # network initialisation
    # `is None`, not truthiness: a module defining __len__ (or a compiled one) may be falsy
    if net is None:
        net = SeqCNN(max_len=library.max_len, **(net_kw or {}))
    objective = kind(screen, library, net.to(dev), generator=gen, seed=seed, **objective_kw)
    return train(objective, **loop_kw)


def fit_lift(
    screen: Screen,
    library: SequenceLibrary,
    *,
    net: torch.nn.Module | None = None,
    net_kw: dict | None = None,
    epochs: float | None = 200.0,
    steps: int | None = None,
    lr: float = 3e-3,
    eval_every: int | None = None,
    patience: int = 8,
    device: str | torch.device = "auto",
    seed: int = 0,
    show_progress: bool = True,
    **objective_kw: Any,
) -> FitResult:
    """Train f_theta with LIFT on a sorted pooled screen (LIFT eq. 6 + App. D eq. 36, eq. 7).

    Builds a :class:`~liftkit.lift.objectives.LiftObjective` and runs :func:`train` on it.

    Parameters
    ----------
    screen
        The sorted screen (CSR).
    library
        The library p(x): its samples feed the Monte Carlo terms.
    net, net_kw
        A network to train (any module mapping tokens to f >= 0, compiled or not), or keyword
        arguments of the :class:`~liftkit.lift.nets.SeqCNN` to build.
    epochs, steps, lr, eval_every, patience, show_progress
        The loop's settings (see :func:`train`): a budget of ``epochs`` passes over the
        training cells (or ``steps``), early stopping on the validation cells.
    device, seed
        ``"auto"`` picks CUDA when present; the seed fixes the initialisation, the split, the
        Monte Carlo pool and the minibatches.
    **objective_kw
        ``moi``, ``leavs``, ``l1``, ``batch_size``, ``n_mc``, ``mc_pool``,
        ``leavs_estimator``, ``leavs_noise``, ``phi_init``, ``learn_phi``, ``val_frac``,
        ``val_min``, ``dedupe``: see
        :class:`~liftkit.lift.objectives.LiftObjective` and its base
        :class:`~liftkit.lift.objectives.ScreenObjective`. ``leavs=False, l1=0`` is the
        "no regularisation" ablation.
    """
    loop_kw = dict(epochs=epochs, steps=steps, lr=lr, eval_every=eval_every,
                   patience=patience, show_progress=show_progress)
    return _fit(LiftObjective, screen, library, net, net_kw, device, seed, loop_kw, objective_kw)


def fit_conventional(
    screen: Screen,
    library: SequenceLibrary,
    *,
    moi: float | None = None,
    net: torch.nn.Module | None = None,
    net_kw: dict | None = None,
    epochs: float | None = 200.0,
    steps: int | None = None,
    lr: float = 3e-3,
    eval_every: int | None = None,
    patience: int = 8,
    device: str | torch.device = "auto",
    seed: int = 0,
    show_progress: bool = True,
    **objective_kw: Any,
) -> FitResult:
    """Conventional training: every sorted cell split into pairs (x_ij, y_i) (LIFT Sec. 6).

    Builds a :class:`~liftkit.lift.objectives.ConventionalObjective` and runs :func:`train` on
    it: same network, NB likelihood and optimiser as :func:`fit_lift`, the single-sequence LeaVS
    term, and as many sequences per step. Keyword arguments as :func:`fit_lift`; ``moi`` is
    accepted (so both fits take the same keywords) and not used.
    """
    del moi  # pairs carry no MOI
    loop_kw = dict(epochs=epochs, steps=steps, lr=lr, eval_every=eval_every,
                   patience=patience, show_progress=show_progress)
    return _fit(ConventionalObjective, screen, library, net, net_kw, device, seed, loop_kw,
                objective_kw)

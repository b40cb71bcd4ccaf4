"""Minibatch SVI for the SAMS-VAE family with a validation set (SAMS-VAE App. A.1, A.3).

The paper (App. A.3, Replogle experiment) trains 150,000 Adam steps (batch 512, lr 3e-4,
weight decay 1e-6), saves a checkpoint every 2,000 steps and evaluates the one with the best
*validation ELBO*. Here the same rule is applied at every evaluation (every ``eval_every``
steps) and, because the paper does not say how long a fit needs, the budget is given in
*epochs* and the fit stops after ``patience`` evaluations without an improvement larger than
``min_delta``; the best weights are restored and the record says whether the budget bound the
fit (it ran out before the stopping rule fired). Our choices where the paper is silent:

- validation value: the per-cell negative IWELBO (eqs. 6-7, without the global ratio, like the
  test metric) of the validation cells with ``val_particles`` particles (``1``: the ELBO) under
  a fixed seed, so that two evaluations differ only by the weights;
- learning-rate schedule: constant (the paper), halve on a plateau of the validation value
  (``"plateau"``), or cosine decay over the budget (``"cosine"``);
- optional gradient-norm clipping (``clip_norm``) and a separate rate for the mask logits
  (``mask_lr``, :func:`param_groups`).

The record also keeps the mask probabilities ``q(m = 1)`` at every evaluation, which is how the
chapter measures how many steps the masks need to settle.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from liftkit.perturb import objectives
from liftkit.perturb.modules import PerturbModule
from liftkit.utils import progress

#: Learning-rate schedules of :func:`fit_module`.
LR_SCHEDULES = ("constant", "plateau", "cosine")


@dataclass
class TrainingRecord:
    """What one training run did.

    Attributes
    ----------
    history
        Per evaluation: ``step``, ``epoch``, mean training ``loss`` since the last evaluation,
        validation ``val`` (negative per-cell IWELBO, nats; NaN without validation cells),
        ``lr``, and ``mask_probs`` (a ``[T, D]`` array, models with masks only).
    max_steps
        The budget in steps (from the budget in epochs).
    steps
        Steps run.
    best_step
        The step whose weights were restored.
    stopped_early
        Whether the stopping rule fired.
    bound_by_budget
        Whether the budget ran out first (the fit may not have converged).
    cpu_seconds, wall_seconds
        ``time.process_time`` and wall time of the loop (CPU time counts every thread of the
        process: run with one torch thread to compare fits).
    """

    history: dict[str, list] = field(default_factory=dict)
    max_steps: int = 0
    steps: int = 0
    best_step: int = 0
    stopped_early: bool = False
    bound_by_budget: bool = True
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def epochs(self) -> float:
        """Epochs run (from the history; 0 before the first evaluation)."""
        return float(self.history["epoch"][-1]) if self.history.get("epoch") else 0.0


def minibatch_indices(
    n: int, batch_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Endless shuffled passes over ``n`` cells (a pass's tail is dropped)."""
    order = torch.randperm(n, generator=gen).to(device)
    pos = 0
    while True:
        if pos + batch_size > n:
            order = torch.randperm(n, generator=gen).to(device)
            pos = 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def _scheduler(
    opt: torch.optim.Optimizer, kind: str, max_steps: int, eval_every: int, patience: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The learning-rate schedule (our choice; the paper keeps the rate constant)."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {kind!r}: choose one of {LR_SCHEDULES}")
    if kind == "plateau":  # stepped once per evaluation, with the validation value
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=max(1, patience // 3)
        )
    if kind == "cosine":  # stepped every step
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps)
    return None


@dataclass
class StoppingRule:
    """Early stopping on the validation value: ``patience`` evaluations without an
    improvement larger than ``min_delta`` (nats per cell) end the fit. The weights of the best
    evaluation (any improvement) are kept for restoring."""

    patience: int = 10
    min_delta: float = 0.01

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError("patience must be >= 1 and min_delta >= 0")


@dataclass
class _Tracker:
    rule: StoppingRule
    best: float = math.inf
    ref: float = math.inf
    step: int = 0
    state: dict | None = None
    bad: int = 0

    def update(self, value: float, step: int, module: PerturbModule) -> bool:
        """Record an evaluation; True when the fit should stop."""
        if math.isnan(value):  # no validation: the last weights are the result
            self.step = step
            return False
        if value < self.best:
            self.best, self.step = value, step
            self.state = copy.deepcopy(module.state_dict())
        if value < self.ref - self.rule.min_delta:
            self.ref, self.bad = value, 0
            return False
        self.bad += 1
        return self.bad >= self.rule.patience


def _steps(max_steps: int, show_progress: bool) -> range:
    steps = range(1, max_steps + 1)
    return progress(steps, desc="fit") if show_progress else steps


def param_groups(module: PerturbModule, lr: float, mask_lr: float | None) -> list[dict]:
    """Adam parameter groups: the mask logits at ``mask_lr`` (None: ``lr``), the rest at ``lr``.

    Our option, not the paper's (one rate for all): the masks move slowly under
    straight-through gradients, and a larger rate for their logits alone lets them settle
    within the steps the rest of the model needs.
    """
    mask = getattr(module, "mask", None)
    if mask is None or mask_lr is None:
        return [{"params": list(module.parameters()), "lr": lr}]
    ids = {id(p) for p in mask.parameters()}
    rest = [p for p in module.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, {"params": list(mask.parameters()), "lr": mask_lr}]


def _evaluate(
    module: PerturbModule, val: tuple[torch.Tensor, torch.Tensor] | None, particles: int
) -> float:
    """Negative mean per-cell IWELBO of the validation cells (fixed seed), NaN without them."""
    if val is None:
        return math.nan
    value = -float(np.mean(objectives.iwelbo(module, *val, n_particles=particles, seed=12345)))
    module.train()
    return value


def _log(record: TrainingRecord, module: PerturbModule, **values: float) -> None:
    for key, value in values.items():
        record.history.setdefault(key, []).append(value)
    if module.has_mask:
        probs = module.mask_probs().detach().cpu().numpy().copy()
        record.history.setdefault("mask_probs", []).append(probs)


def fit_module(
    module: PerturbModule,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n_cells: int,
    *,
    max_steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_particles: int = 1,
    eval_every: int = 50,
    stopping: StoppingRule | None = None,
    lr_schedule: str = "constant",
    clip_norm: float | None = None,
    mask_lr: float | None = None,
    show_progress: bool = False,
) -> tuple[list[float], TrainingRecord]:
    """Adam on ``loss_fn(cell indices)`` with validation, early stopping and best restore.

    ``loss_fn`` is the negative minibatch ELBO per cell (App. A.1). Without validation cells
    (``val=None``) nothing is restored and the fit runs its whole budget. ``mask_lr`` is the
    learning rate of the mask logits (None: ``lr``; see :func:`param_groups`). Returns the
    per-step losses and the :class:`TrainingRecord`.
    """
    stopping = stopping or StoppingRule()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = next(module.parameters()).device
    batches = minibatch_indices(n_cells, min(batch_size, n_cells), gen, device)
    opt = torch.optim.Adam(param_groups(module, lr, mask_lr), lr=lr, weight_decay=weight_decay)
    sched = _scheduler(opt, lr_schedule, max_steps, eval_every, stopping.patience)
    record, track, losses = TrainingRecord(max_steps=max_steps), _Tracker(stopping), []
    running, last = 0.0, 0
    steps_per_epoch = max(1, n_cells // min(batch_size, n_cells))
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    module.train()
    for step in _steps(max_steps, show_progress):
        loss = loss_fn(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
        opt.step()
        if lr_schedule == "cosine":
            sched.step()
        losses.append(loss.item())
        running += losses[-1]
        if step % eval_every and step != max_steps:
            continue
        value = _evaluate(module, val, val_particles)
        _log(record, module, step=step, epoch=step / steps_per_epoch,
             loss=running / (step - last), val=value, lr=opt.param_groups[0]["lr"])
        running, last = 0.0, step
        if lr_schedule == "plateau" and not math.isnan(value):
            sched.step(value)
        if track.update(value, step, module):
            record.stopped_early = True
            break
    record.cpu_seconds = time.process_time() - t_cpu
    record.wall_seconds = time.perf_counter() - t_wall
    record.steps, record.best_step = step, track.step
    record.bound_by_budget = not record.stopped_early
    if track.state is not None:
        module.load_state_dict(track.state)
    module.eval()
    return losses, record

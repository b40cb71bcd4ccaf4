"""A toy pooled screen over a finite library: standard compressed sensing (LIFT §3, eq 12).

The finite case of LIFT: the library has ``n_variants`` equally likely members, cell i receives
Poisson(MOI) of them, and its readout is the sum of their activities plus Gaussian noise. With
``moi`` small this is individual testing; with ``moi`` large every cell is a random mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class ToyScreen:
    """Counts of each variant in each cell (sparse, cells x variants), readouts and the truth.

    Attributes
    ----------
    counts
        ``n_ik``, cells x variants (CSR).
    y
        Readout of each cell.
    beta
        True activity of each variant.
    moi
        The multiplicity of infection it was drawn at.
    """

    counts: sp.csr_matrix
    y: np.ndarray
    beta: np.ndarray
    moi: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_cells, n_variants)``."""
        return self.counts.shape


def toy_pooled_screen(
    n_cells: int = 1000,
    n_variants: int = 200,
    moi: float = 1.0,
    n_active: int = 10,
    effect: float = 1.0,
    noise_sd: float = 0.1,
    seed: int = 0,
) -> ToyScreen:
    """Simulate the toy screen (LIFT eqs 5, 10-11 with uniform w_k = 1/K and Gaussian noise).

    Counts per cell and variant are independent Poisson(MOI / n_variants) (Prop 5.2), drawn in
    one vectorised call; ``n_active`` variants have activity ``effect``, the rest zero. It is the
    manifest's ``toy_pooled_screen`` (``liftkit.data.load("toy_pooled_screen")``).

    Raises
    ------
    ValueError
        Sizes below 1, ``moi <= 0``, or ``n_active`` outside ``[0, n_variants]``.

    Examples
    --------
    >>> screen = toy_pooled_screen(n_cells=100, n_variants=20, moi=3.0)
    >>> screen.shape, int((screen.beta != 0).sum())
    ((100, 20), 10)
    """
    if n_cells < 1 or n_variants < 1:
        raise ValueError("n_cells and n_variants must be >= 1")
    if moi <= 0:
        raise ValueError(f"moi must be > 0, got {moi}")
    if not 0 <= n_active <= n_variants:
        raise ValueError(f"n_active must be in [0, n_variants={n_variants}], got {n_active}")
    gen = torch.Generator().manual_seed(seed)
    rate = torch.full((n_cells, n_variants), moi / n_variants, dtype=torch.float64)
    counts = torch.poisson(rate, generator=gen)
    beta = torch.zeros(n_variants, dtype=torch.float64)
    beta[torch.randperm(n_variants, generator=gen)[:n_active]] = effect
    y = counts @ beta + noise_sd * torch.randn(n_cells, generator=gen, dtype=torch.float64)
    return ToyScreen(sp.csr_matrix(counts.numpy()), y.numpy(), beta.numpy(), float(moi))

"""Evaluation of perturbation models (SAMS-VAE section 3): IWELBO, model ATE and data DE.

All functions are chunked so the number of particles ``K`` can be large (``K = 10,000`` as in
Table 1): particles and cells of a chunk are one tensor, and the IWELBO's log-mean-exp is
accumulated across particle chunks with ``logaddexp``.
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import torch

from liftkit.perturb.module import PerturbVAEModule
from liftkit.stats import nb_log_prob_const


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(start + size, total)


@torch.no_grad()
def iwelbo(
    module: PerturbVAEModule,
    x: torch.Tensor,
    d: torch.Tensor,
    n_particles: int = 100,
    seed: int = 0,
    max_elements: int = 2**24,
) -> np.ndarray:
    """Per-cell importance-weighted ELBO (SAMS-VAE eqs. 6-7) with ``K = n_particles``.

    For each held-out cell ``i``:
    ``log (1/K) sum_k p(x_i | z_k) p(z_basal,k) / q(z_basal,k | x_i, d_i, M_k, E_k)`` with
    ``(M_k, E_k) ~ q`` and ``z_basal,k ~ q(. | M_k, E_k)``. The global ratio
    ``p(M, E) / q(M, E)`` of eq. 7 is left out: for held-out cells the fitted ``q(M, E)`` plays
    the role of the posterior of the globals (our reading of the paper's per-cell test IWELBO,
    whose values are per cell). ``K = 1`` gives an unbiased ELBO estimate.

    Parameters
    ----------
    module
        A trained :class:`PerturbVAEModule`.
    x, d
        Counts ``[N, G]`` and module dosages ``[N, T]``.
    n_particles
        ``K``.
    seed
        Seed of the particles.
    max_elements
        Largest ``particles x cells x genes`` tensor formed at once (memory knob).

    Returns
    -------
    numpy.ndarray
        ``[N]`` IWELBO per cell (nats).
    """
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    module.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    n, g = x.shape
    # cells per chunk leave room for up to 32 particles at once
    cell_chunk = max(1, min(n, max_elements // (g * min(n_particles, 32))))
    out = torch.empty(n, device=x.device)
    for c0, c1 in _chunks(n, cell_chunk):
        xb, db = x[c0:c1], d[c0:c1]
        const = nb_log_prob_const(xb, module.log_theta)
        part_chunk = max(1, min(n_particles, max_elements // ((c1 - c0) * g)))
        acc = torch.full((c1 - c0,), -math.inf, device=x.device)
        for p0, p1 in _chunks(n_particles, part_chunk):
            glob = module.sample_globals(p1 - p0, generator=gen)
            loc = module.local_terms(xb, db, glob, p1 - p0, const=const, generator=gen)
            acc = torch.logaddexp(acc, torch.logsumexp(loc.log_ratio, 0))
        out[c0:c1] = acc - math.log(n_particles)
    return out.cpu().numpy()


@torch.no_grad()
def average_treatment_effect(
    module: PerturbVAEModule,
    dosages: torch.Tensor,
    library_sizes: torch.Tensor,
    n_particles: int = 1000,
    n_samples: int = 1,
    target_sum: float = 1e4,
    seed: int = 0,
    max_elements: int = 2**24,
) -> np.ndarray:
    """Model average treatment effect against control (SAMS-VAE sec. 3.2).

    ``ATE(d*) = E_{p(z_b) q(E, M)} [ E[y | do(d*), z_b, M, E] - E[y | do(d_0), z_b, M, E] ]``
    with ``d_0 = 0`` (control), ``K = n_particles`` outer draws of ``z_b ~ N(0, I)`` (the basal
    prior; SVAE+ and the conditional VAE use their ``N(0, I)`` noise the same way) and globals
    ``(M, E) ~ q``, and ``S = n_samples`` inner count draws per particle. Treatment and control
    share the particle. ``y`` is the library-size-normalised log expression
    ``log1p(target_sum * x / sum(x))`` of counts ``x ~ NB(l rho, theta)``, with ``l`` drawn from
    the training library sizes, so that the ATE is on the same scale as the data DE of
    :func:`differential_expression` (the paper normalises both by library size, App. A.3).

    Returns
    -------
    numpy.ndarray
        ``[n_perturbations, G]``.
    """
    if n_particles < 1 or n_samples < 1:
        raise ValueError("n_particles and n_samples must be >= 1")
    module.eval()
    dev = module.log_theta.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    q, g, dz = dosages.shape[0], module.n_genes, module.n_latent
    design = torch.cat(
        [torch.zeros(1, dosages.shape[1], device=dev), dosages.to(dev)]
    )  # row 0: control
    theta = module.log_theta.exp()
    chunk = max(1, min(n_particles, max_elements // ((q + 1) * g * n_samples)))
    total = torch.zeros(q + 1, g, device=dev)
    for p0, p1 in _chunks(n_particles, chunk):
        k = p1 - p0
        glob = module.sample_globals(k, generator=gen)
        u = torch.randn((k, 1, dz), device=dev, generator=gen)
        if module.kind == "cvae":
            z = u.expand(k, q + 1, dz)
        else:
            z = u + module.perturbation_shift(glob, design)  # [k, q+1, D]
        log_rho = module.decode_log_rho(z, design)
        pick = torch.randint(len(library_sizes), (k, 1, 1), device=dev, generator=gen)
        lib = library_sizes.to(dev)[pick]
        mu = (log_rho + lib.log()).exp()
        # gamma-Poisson draw (the NB of section 2.2) with the torch generator, for determinism
        rate = torch._standard_gamma(theta.expand(n_samples, *mu.shape).contiguous(), generator=gen)
        counts = torch.poisson(rate * mu / theta, generator=gen)
        size = counts.sum(-1, keepdim=True).clamp_min(1.0)
        y = torch.log1p(target_sum * counts / size)
        total += y.sum((0, 1))
    mean = total / (n_particles * n_samples)
    return (mean[1:] - mean[:1]).cpu().numpy()


def log_normalise(x: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(target_sum * x / library size)`` per cell (SAMS-VAE App. A.3)."""
    lib = x.sum(1, keepdims=True)
    return np.log1p(target_sum * x / np.maximum(lib, 1.0))


def differential_expression(
    adata: ad.AnnData,
    layer: str | None = "counts",
    dosage_key: str = "dosage",
    target_sum: float = 1e4,
    min_cells: int = 1,
) -> pd.DataFrame:
    """Data DE per single perturbation: mean log-normalised expression minus control's.

    ``DE(d*) = E_{x ~ D^{d*}}[y] - E_{x ~ D^{d_0}}[y]`` (SAMS-VAE sec. 3.2) over cells that
    received exactly that one perturbation, against cells with no perturbation.

    Returns
    -------
    pandas.DataFrame
        Perturbations with at least ``min_cells`` single-guide cells x genes.
    """
    from liftkit.perturb.model import read_counts, read_dosage

    x = read_counts(adata, layer)
    d, names = read_dosage(adata, dosage_key)
    y = log_normalise(x, target_sum)
    n_guides = d.sum(1)
    control = n_guides == 0
    if control.sum() == 0:
        raise ValueError("no control cells (all-zero dosage rows): DE needs a control group")
    single = (n_guides == 1)[:, None] * d  # [N, T] membership of single-guide groups
    counts = single.sum(0)
    keep = counts >= max(min_cells, 1)
    means = (single[:, keep].T @ y) / counts[keep][:, None]
    de = means - y[control].mean(0)
    return pd.DataFrame(
        de,
        index=[n for n, k in zip(names, keep, strict=True) if k],
        columns=list(map(str, adata.var_names)),
    )

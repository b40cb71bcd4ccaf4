"""Treatment effects of SAMS-VAE section 3.2: the model's ATE and the data's DE.

:func:`average_treatment_effect` draws counterfactual cells from a trained module;
:func:`differential_expression` averages observed cells. Both work on the same
library-size-normalised log expression (:func:`log_normalise`, App. A.3), so that their Pearson
correlation (the ATE-Pearson, :func:`liftkit.metrics.ate_pearson`) compares like with like.
The model's IWELBO (section 3.1) is :func:`liftkit.perturb.objectives.iwelbo`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from liftkit.perturb.modules import PerturbModule
from liftkit.perturb.setup import read_counts, read_dosage


@torch.no_grad()
def average_treatment_effect(
    module: PerturbModule,
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
    prior; SVAE+ and the conditional VAE use their ``N(0, I)`` noise the same way, see
    :meth:`~liftkit.perturb.modules.PerturbModule.latent_from_noise`) and globals
    ``(M, E) ~ q``, and ``S = n_samples`` inner count draws per particle. Treatment and control
    share the particle. ``y`` is the library-size-normalised log expression
    ``log1p(target_sum * x / sum(x))`` of counts ``x ~ NB(l rho, theta)`` (or the module's
    other likelihood, :meth:`~liftkit.perturb.modules.PerturbModule.draw_counts`), with ``l``
    drawn from the training library sizes, so that the ATE is on the same scale as the data DE of
    :func:`differential_expression` (the paper normalises both by library size, App. A.3).

    Parameters
    ----------
    module
        A trained model.
    dosages
        Module dosages ``[Q, T]`` of the treatments ``d*``.
    library_sizes
        Training library sizes ``[N]`` to draw ``l`` from.
    n_particles, n_samples
        ``K`` and ``S``.
    target_sum
        Normalisation total of ``y``.
    seed
        Seed of all draws.
    max_elements
        Largest ``samples x particles x treatments x genes`` tensor formed at once.

    Returns
    -------
    numpy.ndarray
        ``[Q, G]``.
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
    chunk = max(1, min(n_particles, max_elements // ((q + 1) * g * n_samples)))
    total = torch.zeros(q + 1, g, device=dev)
    for p0 in range(0, n_particles, chunk):
        k = min(p0 + chunk, n_particles) - p0
        glob = module.sample_globals(k, generator=gen)
        u = torch.randn((k, 1, dz), device=dev, generator=gen)
        log_rho = module.decode_log_rho(module.latent_from_noise(u, glob, design), design)
        pick = torch.randint(len(library_sizes), (k, 1, 1), device=dev, generator=gen)
        mu = (log_rho + library_sizes.to(dev)[pick].log()).exp()
        # the likelihood's draw (NB: gamma-Poisson) with the torch generator, for determinism;
        # Normal draws are clipped at 0 so that the log-normalised expression exists
        counts = module.draw_counts(mu, gen, n_samples).clamp_min(0.0)
        size = counts.sum(-1, keepdim=True).clamp_min(1.0)
        total += torch.log1p(target_sum * counts / size).sum((0, 1))
    mean = total / (n_particles * n_samples)
    return (mean[1:] - mean[:1]).cpu().numpy()


def log_normalise(
    x: np.ndarray | sp.spmatrix, target_sum: float = 1e4
) -> np.ndarray | sp.csr_matrix:
    """``log1p(target_sum * x / library size)`` per cell (SAMS-VAE App. A.3), by scanpy
    (``sc.pp.normalize_total`` then ``sc.pp.log1p``); empty cells stay at zero.

    Parameters
    ----------
    x
        Counts ``[N, G]``, dense or scipy sparse; left unchanged (scanpy works on a float64
        copy).
    target_sum
        Normalisation total.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        Float64 ``[N, G]``: dense for a dense ``x``, CSR (never made dense) for a sparse one.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> x = np.array([[1.0, 3.0], [0.0, 2.0]])
    >>> np.round(log_normalise(x, 4.0), 4).tolist()
    [[0.6931, 1.3863], [0.0, 1.6094]]
    >>> log_normalise(sp.csr_matrix(x), 4.0).nnz
    3
    """
    import scanpy as sc  # imported here: scanpy is slow to import and only the DE needs it

    if sp.issparse(x):
        a = ad.AnnData(sp.csr_matrix(x, dtype=np.float64, copy=True))  # scanpy works in place
    else:
        a = ad.AnnData(np.array(x, dtype=np.float64))  # a copy: scanpy normalises in place
    with warnings.catch_warnings(), _torch_threads_kept():
        warnings.simplefilter("ignore", UserWarning)  # "some cells have zero counts": stay 0
        sc.pp.normalize_total(a, target_sum=target_sum)
        sc.pp.log1p(a)
    return sp.csr_matrix(a.X) if sp.issparse(a.X) else np.asarray(a.X)


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Run scanpy's numba kernels (its CSR ``normalize_total``) on torch's thread count and
    give torch its thread count back afterwards: numba's OpenMP pool shares the OpenMP runtime
    with torch and starting it sets the count torch reads (one torch thread became two, and
    training on a busy 2-core machine three times slower)."""
    import numba

    n_torch, n_numba = torch.get_num_threads(), numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_torch, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(n_numba)
        torch.set_num_threads(n_torch)


def _group_means(
    y: sp.csr_matrix, groups: sp.csr_matrix, sizes: np.ndarray
) -> np.ndarray:
    """Mean rows of ``y`` ``[N, G]`` per group: ``groups.T @ y / sizes`` with a cells x groups
    0/1 indicator ``groups`` ``[N, K]``, ``[K, G]`` dense (only the means are)."""
    return np.asarray((groups.T @ y).toarray()) / sizes[:, None]


def differential_expression(
    adata: ad.AnnData,
    layer: str | None = "counts",
    dosage_key: str = "dosage",
    target_sum: float = 1e4,
    min_cells: int = 1,
) -> pd.DataFrame:
    """Data DE per single perturbation: mean log-normalised expression minus control's.

    ``DE(d*) = E_{x ~ D^{d*}}[y] - E_{x ~ D^{d_0}}[y]`` (SAMS-VAE sec. 3.2) over cells that
    received exactly that one perturbation, against cells with no perturbation. Counts and
    dosages are read as CSR, normalised sparse (:func:`log_normalise`) and averaged by a sparse
    cells x groups indicator product, so no dense ``[N, G]`` matrix is formed.

    Parameters
    ----------
    adata
        Cells with raw counts in ``layers[layer]`` and dosages in ``obsm[dosage_key]``.
    layer, dosage_key
        Where counts and dosages are.
    target_sum
        Normalisation total (:func:`log_normalise`).
    min_cells
        Perturbations with fewer single-guide cells are left out.

    Returns
    -------
    pandas.DataFrame
        Perturbations with at least ``min_cells`` single-guide cells x genes.

    Examples
    --------
    >>> import anndata as ad, numpy as np, scipy.sparse as sp
    >>> x = sp.csr_matrix(np.array([[1, 1], [3, 1], [3, 1]], np.float32))
    >>> a = ad.AnnData(x, obsm={"dosage": np.array([[0], [1], [1]], np.float32)})
    >>> de = differential_expression(a, layer=None, target_sum=4.0)  # log(4/3), log(2/3)
    >>> np.round(de.to_numpy(), 4).tolist()
    [[0.2877, -0.4055]]
    """
    x = read_counts(adata, layer, sparse=True)
    d, names = read_dosage(adata, dosage_key, sparse=True)
    y = log_normalise(x, target_sum)
    n_guides = np.asarray(d.sum(1)).ravel()
    control = n_guides == 0
    if control.sum() == 0:
        raise ValueError("no control cells (all-zero dosage rows): DE needs a control group")
    single = sp.diags((n_guides == 1).astype(np.float32)) @ d  # [N, T] single-guide groups
    counts = np.asarray(single.sum(0)).ravel()
    keep = counts >= max(min_cells, 1)
    means = _group_means(y, sp.csr_matrix(single[:, keep]), counts[keep])
    ctrl = sp.csr_matrix(control[:, None].astype(np.float32))
    de = means - _group_means(y, ctrl, np.array([control.sum()], np.float64))
    return pd.DataFrame(
        de,
        index=[n for n, k in zip(names, keep, strict=True) if k],
        columns=list(map(str, adata.var_names)),
    )

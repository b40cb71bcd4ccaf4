"""Objectives of the SAMS-VAE family: the minibatch ELBO (training) and the IWELBO (evaluation).

- :func:`minibatch_elbo`: ``l_mb`` of SAMS-VAE App. A.1, whose expectation over minibatches is
  ``|B|/N`` times the ELBO of eq. 3; :func:`negative_elbo` is the training loss built on it.
- :func:`iwelbo`: the importance-weighted ELBO of eqs. 6-7 per held-out cell, chunked over cells
  and particles so that ``K = 10,000`` (Table 1) fits in memory.

Both take any :class:`~liftkit.perturb.modules.PerturbModule`: they only combine the log ratios
its :meth:`~liftkit.perturb.modules.PerturbModule.sample_globals` and
:meth:`~liftkit.perturb.modules.PerturbModule.local_terms` return.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from liftkit.perturb.modules import PerturbModule


def minibatch_elbo(
    global_log_ratio: torch.Tensor,
    local_log_ratio: torch.Tensor,
    d_batch: torch.Tensor,
    n_t: torch.Tensor,
) -> torch.Tensor:
    """Minibatch ELBO ``l_mb`` of SAMS-VAE App. A.1.

    ``(1/P) sum_p [ sum_t (n~_t / n_t) log p(e_t, m_t)/q(e_t, m_t) + sum_{i in B} log
    p(x_i, z_i)/q(z_i) ]`` with ``n~_t = sum_{i in B} d_it`` and ``n_t = sum_i d_it`` over the
    training set, so that its expectation over uniformly drawn batches is ``|B|/N`` times the
    full ELBO (eq. 3). Perturbations never seen in training (``n_t = 0``) get weight 0.

    Parameters
    ----------
    global_log_ratio
        ``[P, T]``.
    local_log_ratio
        ``[P, B]``.
    d_batch
        ``[B, T]`` dosages of the batch.
    n_t
        ``[T]`` training-set dosage totals.

    Returns
    -------
    torch.Tensor
        The scalar ``l_mb``.
    """
    n_tilde = d_batch.sum(0)
    w = torch.where(n_t > 0, n_tilde / n_t.clamp_min(1e-12), torch.zeros_like(n_tilde))
    return ((global_log_ratio * w).sum(-1) + local_log_ratio.sum(-1)).mean(0)


def negative_elbo(
    module: PerturbModule,
    x: torch.Tensor,
    d: torch.Tensor,
    n_t: torch.Tensor,
    n_particles: int = 1,
) -> torch.Tensor:
    """Training loss: ``-l_mb / |B|`` (App. A.1) with ``P = n_particles`` particles.

    Dividing by the batch size keeps the learning rate independent of it. Draws from the global
    torch generator.

    Parameters
    ----------
    module
        The model.
    x, d
        Counts ``[B, G]`` and module dosages ``[B, T]`` of the batch.
    n_t
        ``[T]`` training-set dosage totals.
    n_particles
        ``P``.
    """
    glob, loc = module(x, d, n_particles)
    return -minibatch_elbo(glob.log_ratio, loc.log_ratio, d, n_t) / x.shape[0]


@torch.no_grad()
def iwelbo(
    module: PerturbModule,
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
    whose values are per cell). ``K = 1`` gives an unbiased ELBO estimate. The log-mean-exp is
    accumulated over particle chunks with ``logaddexp``.

    Parameters
    ----------
    module
        A trained model.
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
    for c0 in range(0, n, cell_chunk):
        c1 = min(c0 + cell_chunk, n)
        xb, db = x[c0:c1], d[c0:c1]
        const = module.likelihood_const(xb)
        part_chunk = max(1, min(n_particles, max_elements // ((c1 - c0) * g)))
        acc = torch.full((c1 - c0,), -math.inf, device=x.device)
        for p0 in range(0, n_particles, part_chunk):
            k = min(p0 + part_chunk, n_particles) - p0
            glob = module.sample_globals(k, generator=gen)
            loc = module.local_terms(xb, db, glob, k, const=const, generator=gen)
            acc = torch.logaddexp(acc, torch.logsumexp(loc.log_ratio, 0))
        out[c0:c1] = acc - math.log(n_particles)
    return out.cpu().numpy()

"""The negative binomial in the two parameterisations this package uses.

- :func:`nb_log_prob` and :func:`nb_log_cdf`: mean ``mu`` and dispersion ``phi`` (variance
  ``mu + mu^2 / phi``), elementwise; the LIFT likelihood (eq. 6) and its LeaVS term (eq. 36).
- :func:`nb_log_prob_log_space` and :func:`nb_log_prob_const`: log mean and log inverse
  dispersion ``theta`` (the same family, ``phi = theta``), summed over genes, with the
  particle-independent ``lgamma`` part split off so it is computed once per minibatch; the
  SAMS-VAE likelihood (SAMS-VAE sec. 2.2).
"""

from __future__ import annotations

import math

import torch


def nb_log_prob(y: torch.Tensor, mean: torch.Tensor, phi: torch.Tensor | float) -> torch.Tensor:
    """log NB(y | mean, phi), elementwise, with variance mean + mean^2 / phi (LIFT eq. 6, "NB2").

    Uses ``torch.distributions.NegativeBinomial`` with ``total_count = phi`` and
    ``logits = log(mean / phi)``.
    """
    phi = torch.as_tensor(phi, dtype=mean.dtype, device=mean.device)
    logits = torch.log(mean.clamp_min(1e-10)) - torch.log(phi)
    dist = torch.distributions.NegativeBinomial(total_count=phi, logits=logits, validate_args=False)
    return dist.log_prob(y)


def nb_log_cdf(tau: float, mean: torch.Tensor, phi: torch.Tensor | float) -> torch.Tensor:
    """log P(y <= tau) under NB(mean, phi), summed over the integers 0..floor(tau)."""
    ks = torch.arange(int(math.floor(tau)) + 1, device=mean.device, dtype=mean.dtype)
    lp = nb_log_prob(ks[:, None], mean[None, :], phi)
    return torch.logsumexp(lp, dim=0)


def nb_log_prob_log_space(
    x: torch.Tensor,
    log_mu: torch.Tensor,
    log_theta: torch.Tensor,
    const: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative-binomial (gamma-Poisson) log-likelihood summed over genes (SAMS-VAE sec. 2.2).

    ``log p(x | mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
    + theta log theta + x log mu - (x + theta) log(theta + mu)``, the same density as
    ``torch.distributions.NegativeBinomial(theta, logits=log mu - log theta)`` (tested against it
    and scipy). Written out because the ``lgamma`` part depends only on ``(x, theta)``, not on the
    particle: :func:`nb_log_prob_const` computes it once per minibatch and it broadcasts over particles.

    Parameters
    ----------
    x
        Counts ``[B, G]``.
    log_mu
        Log means ``[..., B, G]`` (leading particle dims broadcast).
    log_theta
        Log inverse dispersion ``[G]``.
    const
        ``nb_log_prob_const(x, log_theta)`` if already computed, ``[B]``.

    Returns
    -------
    torch.Tensor
        ``[..., B]`` log-likelihood per cell.
    """
    theta = log_theta.exp()
    if const is None:
        const = nb_log_prob_const(x, log_theta)
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    per_gene = x * log_mu - (x + theta) * log_theta_mu
    return per_gene.sum(-1) + const



def nb_log_prob_const(x: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Particle-independent part of :func:`nb_log_prob_log_space`, summed over genes: ``[B]``."""
    theta = log_theta.exp()
    return (
        torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1) + theta * log_theta
    ).sum(-1)

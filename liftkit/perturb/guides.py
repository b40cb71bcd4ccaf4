"""The variational families of SAMS-VAE (section 2.3): the factors a guide is assembled from.

A family is the product of global factors per perturbation and a local factor per cell. All
four share ``q(m_t)`` (:class:`MaskGuide`) and differ in the other two:

- ``"mf"``: ``q(e_t)`` (:class:`MeanFieldEmbedding`) and ``q(z^b_i | x_i)``;
- ``"corr_emb"``: ``q(e_t | m_t)`` (:class:`CorrelatedEmbedding`) and ``q(z^b_i | x_i)``;
- ``"corr_basal"``: ``q(e_t)`` and ``q(z^b_i | x_i, z^p_i)``;
- ``"corr"``: ``q(e_t | m_t)`` and ``q(z^b_i | x_i, z^p_i)``.

``"mf"`` is the amortised mean field of eq. 4 and ``"corr"`` the correlated family of eq. 5;
the local factor is an :class:`Encoder` with or without the perturbation offset ``z^p`` as an
input. Which factors a model uses is decided by its module (:mod:`liftkit.perturb.modules`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from liftkit.perturb.distributions import (
    bernoulli_log_prob,
    beta_kl,
    beta_rsample,
    gaussian_rsample,
    relaxed_bernoulli_st,
)
from liftkit.perturb.nets import ResMLP

#: The inference families of section 2.3.
GUIDES = ("mf", "corr_basal", "corr_emb", "corr")


def guide_flags(guide: str) -> tuple[bool, bool]:
    """``(correlated basal encoder, correlated embeddings)`` of a family name (sec. 2.3).

    Raises
    ------
    ValueError
        If ``guide`` is not one of :data:`GUIDES`.
    """
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}: choose one of {GUIDES}")
    return guide in ("corr_basal", "corr"), guide in ("corr_emb", "corr")


def guide_name(correlated_basal: bool, correlated_embedding: bool) -> str:
    """The family name of :data:`GUIDES` with these two factors (inverse of :func:`guide_flags`)."""
    return GUIDES[int(correlated_basal) + 2 * int(correlated_embedding)]


def _positive(raw: torch.Tensor) -> torch.Tensor:
    """Scale parameter from an unconstrained one (floored so that ``log q`` stays finite)."""
    return F.softplus(raw) + 1e-4


class Encoder(nn.Module):
    """Amortised Gaussian ``q(u_i | x_i, c_i) = N(f_enc([x_i, c_i]))`` (SAMS-VAE eqs. 4-5).

    ``u_i`` is the basal state ``z^b_i`` (SAMS-VAE, CPA-VAE) or the whole latent ``z_i``
    (conditional VAE, SVAE+). The condition ``c_i`` is the perturbation offset ``z^p_i`` in the
    correlated families (``q(z^b_i | x_i, d_i, E, M)`` of eq. 5), the dosage ``d_i`` in the
    conditional VAE, and absent in the mean-field family (eq. 4). Counts enter as ``log1p``,
    standardised per gene with training-set statistics (App. A.3).

    Parameters
    ----------
    n_genes, n_latent, hidden, n_layers
        ``G``, ``D`` and the :class:`~liftkit.perturb.nets.ResMLP` width and depth.
    n_cond
        Size of ``c_i``; 0 for none.
    """

    def __init__(
        self, n_genes: int, n_latent: int, hidden: int, n_layers: int = 1, n_cond: int = 0
    ) -> None:
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(n_genes))
        self.register_buffer("x_scale", torch.ones(n_genes))
        self.net = ResMLP(n_genes, 2 * n_latent, hidden, n_layers)
        # the c half of f_enc([x, c]) = W_x x + W_c c: W_x x is computed once for all particles
        self.cond = nn.Linear(n_cond, hidden, bias=False) if n_cond > 0 else None

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input: ``log1p`` counts, standardised per gene (SAMS-VAE App. A.3)."""
        return (torch.log1p(x) - self.x_mean) / self.x_scale

    @torch.no_grad()
    def set_input_stats(self, x: torch.Tensor) -> None:
        """Set the per-gene mean and sd of ``log1p`` counts from training counts ``[N, G]``
        (dense, or sparse rows whose moments are computed without densifying)."""
        if hasattr(x, "moments"):  # sparse rows (liftkit.perturb.setup.CountRows)
            mean, sd = x.moments(log1p=True)
        else:
            lx = torch.log1p(x)
            mean, sd = lx.mean(0), lx.std(0)
        self.x_mean.copy_(mean)
        self.x_scale.copy_(sd.clamp_min(1e-2))

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale ``[..., B, D]`` for counts ``x`` ``[B, G]`` and ``c`` ``[..., B, n_cond]``."""
        extra = self.cond(cond) if self.cond is not None else None
        loc, raw = self.net(self.standardise(x), extra).chunk(2, -1)
        return loc, _positive(raw)


class MaskGuide(nn.Module):
    """``q(m_t) = Bern(sigmoid(logits_t))`` with free logits (SAMS-VAE eqs. 4-5).

    Sampled by a straight-through relaxed Bernoulli (the Gumbel-softmax estimator of sec. 2.3).

    Parameters
    ----------
    n_perts, n_latent
        ``T`` and ``D``.
    temperature
        Relaxation temperature of the straight-through gradient.
    init_prob
        Initial ``q(m_tk = 1)``. Our choice (not fixed by the paper): 0.5, so that masks start
        undecided.
    """

    def __init__(
        self, n_perts: int, n_latent: int, temperature: float = 0.5, init_prob: float = 0.5
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < init_prob < 1:
            raise ValueError(f"the initial mask probability must lie in (0, 1), got {init_prob}")
        self.temperature = temperature
        self.logits = nn.Parameter(
            torch.full((n_perts, n_latent), math.log(init_prob / (1 - init_prob)))
        )

    def probs(self) -> torch.Tensor:
        """``q(m_tk = 1)``, ``[T, D]``."""
        return torch.sigmoid(self.logits)

    def sample(self, n_particles: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masks ``[P, T, D]`` drawn from ``q``: exact 0/1 values, straight-through gradients."""
        shape = (n_particles, *self.logits.shape)
        return relaxed_bernoulli_st(self.logits, self.temperature, shape, generator)

    def log_prob(self, mask: torch.Tensor) -> torch.Tensor:
        """``log q(m_t)`` for masks ``[..., T, D]``: ``[..., T]``."""
        return bernoulli_log_prob(mask, self.logits)


class MaskProbGuide(nn.Module):
    """``q(p_tk) = Beta(c_tk, d_tk)`` of the non-collapsed Beta-Bernoulli mask prior.

    With the prior ``p_tk ~ Beta(a, b)``, ``m_tk ~ Bern(p_tk)`` kept uncollapsed, the guide
    gets a factor for every mask probability ``p_tk``, independent of ``q(m_t)`` (mean field
    over ``p`` and ``m``). A Beta rather than a Kumaraswamy or logit-normal: it is the prior's
    own family, so ``KL(q(p) || p(p))`` has a closed form
    (:func:`~liftkit.perturb.distributions.beta_kl`), and torch differentiates Beta draws
    exactly by implicit reparameterisation
    (:func:`~liftkit.perturb.distributions.beta_rsample`), which removes the reason the
    Kumaraswamy is used elsewhere (a closed-form inverse CDF for reparameterised draws, at the
    price of a KL to the Beta prior that needs a truncated series).

    Parameters
    ----------
    n_perts, n_latent
        ``T`` and ``D``.
    init
        Initial ``(c, d)``; the prior's ``(a, b)`` by the modules' choice, so that the fit
        starts at zero KL.
    """

    def __init__(self, n_perts: int, n_latent: int, init: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        if min(init) <= 1e-3:
            raise ValueError(f"Beta concentrations must be > 1e-3, got {init}")
        raw = [math.log(math.expm1(c - 1e-3)) for c in init]  # inverse of concentrations()
        self.raw1 = nn.Parameter(torch.full((n_perts, n_latent), raw[0]))
        self.raw0 = nn.Parameter(torch.full((n_perts, n_latent), raw[1]))

    def concentrations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c, d)``, ``[T, D]`` each (softplus of free parameters, floored at 1e-3)."""
        return F.softplus(self.raw1) + 1e-3, F.softplus(self.raw0) + 1e-3

    def mean(self) -> torch.Tensor:
        """``E_q[p_tk] = c / (c + d)``, ``[T, D]``."""
        c, d = self.concentrations()
        return c / (c + d)

    def sample(
        self, n_particles: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities ``[P, T, D]`` drawn from ``q(p)`` and their ``log q``, ``[P, T]``."""
        c, d = self.concentrations()
        p, log_q = beta_rsample(c, d, (n_particles, *c.shape), generator)
        return p, log_q.sum(-1)

    def kl(self, a: float, b: float) -> torch.Tensor:
        """``KL(q(p_t) || Beta(a, b))`` per perturbation, summed over latents, ``[T]``."""
        return beta_kl(*self.concentrations(), a, b).sum(-1)


class EmbeddingGuide(nn.Module):
    """Base of the Gaussian factors ``q(e_t | .)`` of the perturbation embeddings."""

    def params(self, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of ``q(e_t)``, broadcastable to ``[P, T, D]``."""
        raise NotImplementedError

    def mean_effect(self, probs: torch.Tensor) -> torch.Tensor:
        """A point summary of the latent offset ``e_t * m_t`` given ``q(m_t = 1)``, ``[T, D]``."""
        raise NotImplementedError

    def sample(
        self,
        mask: torch.Tensor | None,
        n_particles: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``[P, T, D]`` drawn from ``q(e_t | m_t)`` and their ``log q``, ``[P, T]``.

        ``mask`` ``[P, T, D]`` is the sampled mask (None for CPA-VAE, whose masks are all 1).
        """
        loc, scale = self.params(mask)
        return gaussian_rsample(loc, scale, (n_particles, *self.shape), generator)


class MeanFieldEmbedding(EmbeddingGuide):
    """``q(e_t) = N(mu_t, sigma_t)`` with free parameters (SAMS-VAE eq. 4)."""

    def __init__(self, n_perts: int, n_latent: int) -> None:
        super().__init__()
        self.shape = (n_perts, n_latent)
        self.loc = nn.Parameter(0.1 * torch.randn(n_perts, n_latent))
        self.scale_raw = nn.Parameter(torch.full((n_perts, n_latent), -2.0))

    def params(self, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)``, ``[T, D]``; the mask is not an input of this factor."""
        return self.loc, _positive(self.scale_raw)

    def mean_effect(self, probs: torch.Tensor) -> torch.Tensor:
        """``E_q[e_t * m_t] = mu_t * q(m_t = 1)`` (the two factors are independent)."""
        return self.loc * probs


class CorrelatedEmbedding(EmbeddingGuide):
    """``q(e_t | m_t) = N(f_emb([m_t, onehot(t)]))`` (SAMS-VAE eq. 5).

    ``f_emb`` is a :class:`~liftkit.perturb.nets.ResMLP` with ``n_layers`` hidden layers (one by
    default; the paper does not give its depth, the reference implementation allows several);
    the one-hot half of its input is a learned hidden-space row per perturbation.
    """

    def __init__(self, n_perts: int, n_latent: int, hidden: int, n_layers: int = 1) -> None:
        super().__init__()
        self.shape = (n_perts, n_latent)
        # draws the T x D numbers a mean-field location would take, unused here, so that a seed
        # initialises f_emb as it always did (the numbers in the book depend on it)
        torch.randn(n_perts, n_latent)
        self.net = ResMLP(n_latent, 2 * n_latent, hidden, n_layers)
        self.onehot = nn.Parameter(0.1 * torch.randn(n_perts, hidden))

    def params(self, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of ``q(e_t | m_t)`` for masks ``[..., T, D]``."""
        loc, raw = self.net(mask, extra=self.onehot).chunk(2, -1)
        return loc, _positive(raw)

    def mean_effect(self, probs: torch.Tensor) -> torch.Tensor:
        """``m_t * E_q[e_t | m_t]`` at the thresholded mask ``m_t = 1[q(m_t = 1) > 0.5]``."""
        hard = (probs > 0.5).to(probs.dtype)
        loc, _ = self.params(hard)
        return loc * hard

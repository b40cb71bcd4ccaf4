"""One pure-torch module per model of the SAMS-VAE family (SAMS-VAE sec. 2, App. A.2).

::

    PerturbModule              encoder, decoder, likelihood (sec. 2.2); z ~ N(0, I)
    ├── ConditionalVAEModule   encoder and decoder also see the dosage d (App. A.3)
    └── LatentShiftModule      perturbations act by z^p = sum_t d_t (e_t * m_t) (eq. 1)
        ├── CPAVAEModule       z = z^b + z^p with every mask fixed to 1 (sec. 2.4)
        │   └── SAMSVAEModule  z = z^b + z^p with Bernoulli masks (eqs. 1-2)
        └── SVAEPlusModule     z ~ N(z^p, I), point-estimated embeddings (App. A.2.2)

A module samples the global latents (:meth:`~PerturbModule.sample_globals`) and, given them, the
per-cell latents (:meth:`~PerturbModule.local_terms`); both return the log ratios ``log p - log
q`` that :mod:`liftkit.perturb.objectives` combines into the ELBO and IWELBO. A model differs
from its parent only in the methods it overrides. The guide factors come from
:mod:`liftkit.perturb.guides`.

Shapes: ``P`` particles, ``B`` cells, ``T`` perturbations (SVAE+: conditions), ``G`` genes,
``D`` latent dimensions. Particles are a leading tensor dimension: nothing loops over particles,
cells or perturbations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from liftkit.perturb.distributions import (
    LIKELIHOODS,
    beta_bernoulli_log_prob,
    count_distribution,
    count_log_prob,
    draw_counts,
    gaussian_rsample,
    std_normal_log_prob,
)
from liftkit.perturb.guides import (
    CorrelatedEmbedding,
    Encoder,
    MaskGuide,
    MaskProbGuide,
    MeanFieldEmbedding,
    guide_flags,
    guide_name,
)
from liftkit.perturb.nets import Decoder
from liftkit.stats import nb_log_prob_const

#: Mask priors: ``m_tk ~ Bern(alpha)`` (sec. 2.1), the Beta(a, b)-Bernoulli collapsed over its
#: probability (``"beta"``, alias ``"collapsed"``), or kept with one probability
#: ``p_tk ~ Beta(a, b)`` per perturbation and latent and its own guide factor
#: (``"beta_bernoulli"``).
MASK_PRIORS = ("bernoulli", "beta", "collapsed", "beta_bernoulli")


class Globals(NamedTuple):
    """Global latent samples: masks and embeddings ``[P, T, D]`` (or None) and the global
    log ratio ``log p(e_t, m_t) - log q(e_t, m_t)`` per perturbation, ``[P, T]``."""

    mask: torch.Tensor | None
    emb: torch.Tensor | None
    log_ratio: torch.Tensor


class Locals(NamedTuple):
    """Per-cell terms ``[P, B]``: log-likelihood, local log ratio ``log p(x|z) + log p(z) -
    log q(z)``, and the latent ``z`` ``[P, B, D]``."""

    log_lik: torch.Tensor
    log_ratio: torch.Tensor
    z: torch.Tensor


@dataclass(frozen=True)
class MaskPrior:
    """Prior ``p(m_t)`` of a perturbation's mask row (SAMS-VAE sec. 2.1).

    Parameters
    ----------
    kind
        ``"bernoulli"``: ``m_tk ~ Bern(alpha)``; ``"beta"`` (or ``"collapsed"``): collapsed
        Beta(a, b)-Bernoulli (:func:`~liftkit.perturb.distributions.beta_bernoulli_log_prob`);
        ``"beta_bernoulli"``: ``p_tk ~ Beta(a, b)``, ``m_tk ~ Bern(p_tk)`` with ``p`` a latent
        of its own (guide :class:`~liftkit.perturb.guides.MaskProbGuide`).
    alpha
        Bernoulli prior probability (small for sparse masks).
    beta_ab
        ``(a, b)`` of the Beta-Bernoulli priors.
    """

    kind: str = "bernoulli"
    alpha: float = 0.1
    beta_ab: tuple[float, float] = (1.0, 2.0)

    def __post_init__(self) -> None:
        if self.kind not in MASK_PRIORS:
            raise ValueError(f"unknown mask_prior {self.kind!r}: choose one of {MASK_PRIORS}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")

    @property
    def has_probs(self) -> bool:
        """Whether the mask probabilities ``p`` are latents with a guide factor."""
        return self.kind == "beta_bernoulli"

    def log_prob(self, mask: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(m_t)`` for masks ``[..., T, D]``: ``[..., T]``; for ``"beta_bernoulli"``
        ``log p(m_t | p_t) + log p(p_t)`` at probabilities ``probs`` ``[..., T, D]`` (both from
        ``torch.distributions``-equivalent densities: ``Bernoulli`` and ``Beta``)."""
        if self.kind == "bernoulli":
            a = self.alpha
            return (mask * math.log(a) + (1 - mask) * math.log1p(-a)).sum(-1)
        if self.kind in ("beta", "collapsed"):
            return beta_bernoulli_log_prob(mask, *self.beta_ab)
        if probs is None:
            raise ValueError("the beta_bernoulli prior needs the mask probabilities p")
        a, b = (torch.tensor(v, dtype=probs.dtype, device=probs.device) for v in self.beta_ab)
        log_p = torch.distributions.Beta(a, b, validate_args=False).log_prob(probs)
        # Bernoulli(p) at a straight-through mask, written out: linear in the mask
        log_m = mask * probs.log() + (1 - mask) * torch.log1p(-probs)
        return (log_m + log_p).sum(-1)


class SparseMask(nn.Module):
    """The global masks ``m_t``: their prior ``p(m_t)`` and guide factor ``q(m_t)`` (eqs. 2, 4-5).

    Parameters
    ----------
    n_perts, n_latent
        ``T`` and ``D``.
    prior
        ``p(m_t)``.
    temperature, init_prob
        Of the :class:`~liftkit.perturb.guides.MaskGuide`.
    """

    def __init__(
        self,
        n_perts: int,
        n_latent: int,
        prior: MaskPrior,
        temperature: float = 0.5,
        init_prob: float = 0.5,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.guide = MaskGuide(n_perts, n_latent, temperature, init_prob)
        self.prob_guide = (
            MaskProbGuide(n_perts, n_latent, prior.beta_ab) if prior.has_probs else None
        )

    def probs(self) -> torch.Tensor:
        """``q(m_tk = 1)``, ``[T, D]``."""
        return self.guide.probs()

    def log_ratio(self, mask: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(m_t) - log q(m_t)`` (beta_bernoulli: ``log p(m_t | p_t) + log p(p_t) -
        log q(m_t)``, without ``log q(p_t)``), ``[..., T]``."""
        # log p before log q: the order in which autograd sums the logits' gradient
        return self.prior.log_prob(mask, probs) - self.guide.log_prob(mask)

    def sample(
        self, n_particles: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``m ~ q`` ``[P, T, D]`` and ``log p(m_t) - log q(m_t)``, ``[P, T]``; with the
        non-collapsed prior also ``p ~ q(p)`` and ``log p(p_t) - log q(p_t)`` in the ratio."""
        mask = self.guide.sample(n_particles, generator)
        if self.prob_guide is None:
            return mask, self.log_ratio(mask)
        probs, log_qp = self.prob_guide.sample(n_particles, generator)
        return mask, self.log_ratio(mask, probs) - log_qp


class PerturbModule(nn.Module):
    """Base of the family: ``q(z | x)``, ``z ~ N(0, I)``, ``x ~ NB(l softmax(f(z)), theta)``
    (or a Poisson or Normal with the same mean).

    Subclasses override the hooks below to add global latents (:meth:`sample_globals`), a
    perturbation offset (:meth:`latent_shift`), inputs of the encoder and decoder
    (:meth:`encoder_condition`, :meth:`decoder_condition`) and the latent's prior
    (:meth:`compose`); :meth:`local_terms` assembles them.

    Parameters
    ----------
    n_genes, n_perts
        ``G`` and ``T``.
    n_latent, hidden, n_layers
        Latent size ``D`` and MLP width and depth (paper: 100, 400, 1).
    guide
        Inference family (:data:`~liftkit.perturb.guides.GUIDES`); models without global
        embeddings take ``"mf"`` only.
    likelihood
        ``p(x_ij | z_i)`` with mean ``l_i rho_ij``: ``"nb"`` (the paper's, sec. 2.2),
        ``"poisson"`` or ``"normal"`` (per-gene sd, initialised at the training counts' sd);
        see :data:`~liftkit.perturb.distributions.LIKELIHOODS`.
    """

    #: Whether the model learns masks (:meth:`mask_probs` is then ``q(m = 1)``).
    has_mask: ClassVar[bool] = False

    def __init__(
        self,
        n_genes: int,
        n_perts: int,
        n_latent: int = 10,
        hidden: int = 128,
        n_layers: int = 1,
        guide: str = "mf",
        likelihood: str = "nb",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {LIKELIHOODS}")
        self.likelihood = likelihood
        self.n_genes, self.n_perts, self.n_latent = n_genes, n_perts, n_latent
        self.correlated_basal, self.correlated_embedding = self._guide_flags(guide)
        self.guide = guide_name(self.correlated_basal, self.correlated_embedding)
        enc_cond, dec_cond = self._condition_sizes()
        self.encoder = Encoder(n_genes, n_latent, hidden, n_layers, enc_cond)
        self.decoder = Decoder(n_latent, n_genes, hidden, n_layers, dec_cond)
        self.log_theta = nn.Parameter(torch.full((n_genes,), math.log(10.0)))
        if likelihood == "normal":  # log sd per gene (set from the data by set_input_stats)
            self.log_scale = nn.Parameter(torch.zeros(n_genes))

    # ------------------------------------------------------------------ construction hooks
    def _guide_flags(self, guide: str) -> tuple[bool, bool]:
        """``(correlated basal, correlated embedding)`` for ``guide``: without global embeddings
        there is nothing to correlate, so only ``"mf"`` is accepted."""
        if guide_flags(guide) != (False, False):
            raise ValueError(
                f"{type(self).__name__} has no global basal/embedding pair: use guide='mf'"
            )
        return False, False

    def _condition_sizes(self) -> tuple[int, int]:
        """Sizes of the extra inputs of the encoder and of the decoder (0: none)."""
        return 0, 0

    # ------------------------------------------------------------------ inputs
    @torch.no_grad()
    def set_input_stats(self, x: torch.Tensor) -> None:
        """Standardise the encoder input with these training counts ``[N, G]`` (App. A.3);
        the Normal likelihood's sd starts at each gene's sd."""
        self.encoder.set_input_stats(x)
        if self.likelihood == "normal":
            sd = x.moments(log1p=False)[1] if hasattr(x, "moments") else x.std(0)
            self.log_scale.copy_(sd.clamp_min(1e-2).log())

    @property
    def log_dispersion(self) -> torch.Tensor:
        """The likelihood's per-gene parameter: ``log theta`` (NB), ``log sd`` (Normal);
        the Poisson has none (``log theta``, unused, is returned)."""
        return self.log_scale if self.likelihood == "normal" else self.log_theta

    def likelihood_const(self, x: torch.Tensor) -> torch.Tensor | None:
        """The part of ``log p(x | z)`` that does not depend on ``z`` (NB only, else None),
        computed once per batch by the IWELBO."""
        return nb_log_prob_const(x, self.log_theta) if self.likelihood == "nb" else None

    def observation_model(self, mu: torch.Tensor) -> torch.distributions.Distribution:
        """``p(x | mu)`` as a ``torch.distributions`` object
        (:func:`~liftkit.perturb.distributions.count_distribution`)."""
        return count_distribution(self.likelihood, mu, self.log_dispersion)

    def draw_counts(
        self, mu: torch.Tensor, generator: torch.Generator | None = None,
        n_samples: int | None = None,
    ) -> torch.Tensor:
        """Seeded draws from the likelihood with means ``mu``
        (:func:`~liftkit.perturb.distributions.draw_counts`)."""
        return draw_counts(self.likelihood, mu, self.log_dispersion, generator, n_samples)

    # ------------------------------------------------------------------ globals
    def mask_probs(self) -> torch.Tensor:
        """``q(m_t = 1)`` per entry ``[T, D]`` (Figure 2)."""
        raise ValueError(f"{type(self).__name__}: the model has no latent masks")

    def mean_effect(self) -> torch.Tensor:
        """A point estimate of each perturbation's latent offset ``e_t * m_t``, ``[T, D]``."""
        raise ValueError(f"{type(self).__name__}: the model has no perturbation embeddings")

    def sample_globals(self, n_particles: int, generator: torch.Generator | None = None) -> Globals:
        """Global latents and their log ratio ``[P, T]``: none here (all zeros)."""
        zeros = torch.zeros(n_particles, self.n_perts, device=self.log_theta.device)
        return Globals(None, None, zeros)

    # ------------------------------------------------------------------ local hooks
    def latent_shift(self, glob: Globals, d: torch.Tensor) -> torch.Tensor | None:
        """Latent offset of each cell's perturbations, ``[P, B, D]`` (None: no offset)."""
        return None

    def encoder_condition(self, d: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor | None:
        """Extra encoder input next to ``x`` (None: ``q(u | x)``)."""
        return None

    def decoder_condition(self, d: torch.Tensor) -> torch.Tensor | None:
        """Extra decoder input next to ``z`` (None: ``f(z)``)."""
        return None

    def compose(
        self, u: torch.Tensor, shift: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent ``z`` from the encoder's sample ``u`` and ``log p`` of ``u``: ``z = u``,
        ``p = N(0, I)``."""
        return u, std_normal_log_prob(u)

    def latent_from_noise(self, u: torch.Tensor, glob: Globals, d: torch.Tensor) -> torch.Tensor:
        """``z`` of prior noise ``u ~ N(0, I)`` ``[P, 1, D]`` under dosages ``d`` ``[B, T]``:
        ``[P, B, D]`` (the generative direction, used by the ATE of sec. 3.2)."""
        return u.expand(u.shape[0], d.shape[0], u.shape[-1])

    # ------------------------------------------------------------------ representations
    def mean_shift(self, d: torch.Tensor) -> torch.Tensor | None:
        """A point estimate of each cell's latent offset ``[1, B, D]`` (None: no offset)."""
        return None

    def basal_of(self, u: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        """The basal state of the encoder's variable ``u``: ``u`` itself here."""
        return u

    @torch.no_grad()
    def basal_mean(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Mean of the basal state ``z^b`` under the guide, ``[B, D]`` (our summary for
        embeddings and disentanglement metrics): the encoder's location, fed the point-estimate
        offset ``mean_shift(d)`` in the correlated families (eq. 5)."""
        shift = self.mean_shift(d)
        loc, _ = self.encoder(x, self.encoder_condition(d, shift))
        return self.basal_of(loc, shift).reshape(-1, x.shape[0], self.n_latent)[0]

    @torch.no_grad()
    def posterior_predictive(
        self, x: torch.Tensor, d: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One replicate ``x_rep ~ p(x | z) q(z | x, d)`` per cell, ``[B, G]`` (sec. 2.2).

        Globals and the per-cell latent are drawn from the guide (with ``generator``), then
        counts from the likelihood with each cell's observed library size
        (:meth:`observation_model`, a ``torch.distributions`` object, which draws from the
        global generator).
        """
        glob = self.sample_globals(1, generator)
        z = self.local_terms(x, d, glob, 1, generator=generator).z[0]
        log_rho = self.decode_log_rho(z, d)
        log_mean = log_rho + x.sum(-1, keepdim=True).clamp_min(1.0).log()
        return self.observation_model(log_mean.exp()).sample()

    # ------------------------------------------------------------------ model terms
    def decode_log_rho(self, z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``log rho = log_softmax(f_theta(z))`` over genes (sec. 2.2), ``[..., B, G]``."""
        return F.log_softmax(self.decoder(z, self.decoder_condition(d)), -1)

    def local_terms(
        self,
        x: torch.Tensor,
        d: torch.Tensor,
        glob: Globals,
        n_particles: int,
        const: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Locals:
        """Sample the per-cell latent given the globals; its log-likelihood and log ratio.

        The per-cell factor of eqs. 2 and 4-5: ``u ~ q(u | x, c)``, ``z`` and ``log p(u)`` from
        :meth:`compose`, and ``log p(x | z)`` with the library size ``l_i = sum_j x_ij``
        observed (sec. 2.2).

        Parameters
        ----------
        x, d
            Counts ``[B, G]`` and module dosages ``[B, T]``.
        glob
            Global samples of :meth:`sample_globals`, ``P = n_particles`` of them.
        n_particles
            ``P``.
        const
            :meth:`likelihood_const` of ``x`` if already computed (NB only).
        generator
            Torch generator of the encoder noise (None: the global one).
        """
        shift = self.latent_shift(glob, d)
        loc, scale = self.encoder(x, self.encoder_condition(d, shift))
        u, log_q = gaussian_rsample(loc, scale, (n_particles, *loc.shape[-2:]), generator)
        z, log_prior = self.compose(u, shift)
        logits = self.decoder(z, self.decoder_condition(d))
        log_lib = x.sum(-1, keepdim=True).clamp_min(1.0).log()
        log_lik = count_log_prob(self.likelihood, logits, x, log_lib, self.log_dispersion, const)
        return Locals(log_lik, log_lik + log_prior - log_q, z)

    def forward(
        self,
        x: torch.Tensor,
        d: torch.Tensor,
        n_particles: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[Globals, Locals]:
        """Global ``[P, T]`` and local ``[P, B]`` terms of one minibatch (App. A.1)."""
        glob = self.sample_globals(n_particles, generator)
        return glob, self.local_terms(x, d, glob, n_particles, generator=generator)


class ConditionalVAEModule(PerturbModule):
    """Conditional VAE baseline: ``q(z | x, d)``, ``z ~ N(0, I)``, ``x ~ p(x | z, d)`` (App. A.3)."""

    def _condition_sizes(self) -> tuple[int, int]:
        return self.n_perts, self.n_perts

    def encoder_condition(self, d: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor | None:
        """The dosage: the encoder reads ``[x, d]``."""
        return d

    def decoder_condition(self, d: torch.Tensor) -> torch.Tensor | None:
        """The dosage: the decoder reads ``[z, d]``."""
        return d


class LatentShiftModule(PerturbModule):
    """Models whose perturbations offset the latent by ``z^p = sum_t d_t (e_t * m_t)`` (eq. 1).

    Subclasses sample the embeddings ``e_t`` (and masks ``m_t``) in :meth:`sample_globals`.
    """

    def latent_shift(self, glob: Globals, d: torch.Tensor) -> torch.Tensor | None:
        """``z^p_i = sum_t d_it (e_t * m_t)`` (SAMS-VAE eq. 1) for a batch: ``[P, B, D]``."""
        effect = glob.emb if glob.mask is None else glob.emb * glob.mask
        return torch.matmul(d, effect)  # [B, T] @ [P, T, D]

    def latent_from_noise(self, u: torch.Tensor, glob: Globals, d: torch.Tensor) -> torch.Tensor:
        """``z = u + z^p``: the noise plays the basal state (SVAE+: the prior's noise)."""
        return u + self.latent_shift(glob, d)

    def mean_shift(self, d: torch.Tensor) -> torch.Tensor | None:
        """``d @ mean_effect()``, ``[1, B, D]``."""
        return (d @ self.mean_effect()).unsqueeze(0)


class CPAVAEModule(LatentShiftModule):
    """CPA-VAE (SAMS-VAE sec. 2.4): ``z = z^b + sum_t d_t e_t``, every mask fixed to 1.

    Priors ``e_t ~ N(0, I)`` and ``z^b ~ N(0, I)``; guide ``q(e_t)`` and ``q(z^b | x)`` or, with
    ``guide="corr_basal"`` (or ``"corr"``), ``q(z^b | x, z^p)``. With masks fixed to 1,
    ``q(e_t | m_t)`` is just ``q(e_t)``: ``"corr_emb"`` is mean field and ``"corr"`` is
    ``"corr_basal"``. ``emb_layers`` is the depth of the ``q(e_t | m_t)`` network of the
    correlated-embedding families (used by subclasses with masks).
    """

    def __init__(
        self,
        n_genes: int,
        n_perts: int,
        n_latent: int = 10,
        hidden: int = 128,
        n_layers: int = 1,
        guide: str = "mf",
        emb_layers: int = 1,
        likelihood: str = "nb",
    ) -> None:
        super().__init__(n_genes, n_perts, n_latent, hidden, n_layers, guide, likelihood)
        self.embedding = (
            CorrelatedEmbedding(n_perts, n_latent, hidden, emb_layers)
            if self.correlated_embedding
            else MeanFieldEmbedding(n_perts, n_latent)
        )

    def _guide_flags(self, guide: str) -> tuple[bool, bool]:
        return guide_flags(guide)[0], False

    def _condition_sizes(self) -> tuple[int, int]:
        return (self.n_latent if self.correlated_basal else 0), 0

    def mask_probs(self) -> torch.Tensor:
        """All ones: CPA-VAE's masks are fixed to 1."""
        return torch.ones(self.n_perts, self.n_latent, device=self.log_theta.device)

    def mean_effect(self) -> torch.Tensor:
        """``E_q[e_t * m_t]`` (correlated embeddings: at the thresholded mask), ``[T, D]``."""
        return self.embedding.mean_effect(self.mask_probs())

    def sample_mask(
        self, n_particles: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """No mask to sample (None) and a zero log ratio ``[P, T]``."""
        return None, torch.zeros(n_particles, self.n_perts, device=self.log_theta.device)

    def sample_globals(self, n_particles: int, generator: torch.Generator | None = None) -> Globals:
        """``(M, E) ~ q(M) q(E | M)`` and ``log p(e_t, m_t) - log q(e_t, m_t)``, ``[P, T]``
        (the global factors of eqs. 2 and 4-5)."""
        mask, log_ratio = self.sample_mask(n_particles, generator)
        emb, log_q = self.embedding.sample(mask, n_particles, generator)
        log_ratio = log_ratio + std_normal_log_prob(emb) - log_q
        return Globals(mask, emb, log_ratio)

    def encoder_condition(self, d: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor | None:
        """``z^p`` in the correlated families (``q(z^b | x, z^p)``, eq. 5), else None."""
        return shift if self.correlated_basal else None

    def compose(
        self, u: torch.Tensor, shift: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = z^b + z^p`` (eq. 1) and ``log p(z^b) = log N(z^b; 0, I)``."""
        return u + shift, std_normal_log_prob(u)


class SAMSVAEModule(CPAVAEModule):
    """SAMS-VAE (eqs. 1-2): ``z = z^b + sum_t d_t (e_t * m_t)`` with sparse masks ``m_t``.

    Priors ``m_tk ~ Bern(alpha)`` (or Beta-Bernoulli), ``e_t ~ N(0, I)``, ``z^b ~ N(0, I)``.
    Any of the four families of :mod:`liftkit.perturb.guides`.

    Parameters
    ----------
    n_genes, n_perts, n_latent, hidden, n_layers, guide
        As for :class:`PerturbModule`.
    mask_prior, alpha, beta_ab
        Of the :class:`MaskPrior`.
    temperature, mask_init
        Of the :class:`~liftkit.perturb.guides.MaskGuide`.
    emb_layers
        Depth of the ``q(e_t | m_t)`` network (correlated-embedding families; our default 1).
    likelihood
        As for :class:`PerturbModule`.
    """

    has_mask = True

    def __init__(
        self,
        n_genes: int,
        n_perts: int,
        n_latent: int = 10,
        hidden: int = 128,
        n_layers: int = 1,
        guide: str = "mf",
        mask_prior: str = "bernoulli",
        alpha: float = 0.1,
        beta_ab: tuple[float, float] = (1.0, 2.0),
        temperature: float = 0.5,
        mask_init: float = 0.5,
        emb_layers: int = 1,
        likelihood: str = "nb",
    ) -> None:
        prior = MaskPrior(mask_prior, alpha, beta_ab)
        super().__init__(n_genes, n_perts, n_latent, hidden, n_layers, guide, emb_layers,
                         likelihood)
        self.mask = SparseMask(n_perts, n_latent, prior, temperature, mask_init)

    def _guide_flags(self, guide: str) -> tuple[bool, bool]:
        return guide_flags(guide)

    def mask_probs(self) -> torch.Tensor:
        """``q(m_t = 1)`` per entry, ``[T, D]``."""
        return self.mask.probs()

    def sample_mask(
        self, n_particles: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``M ~ q(M)`` ``[P, T, D]`` and ``log p(m_t) - log q(m_t)``, ``[P, T]``."""
        return self.mask.sample(n_particles, generator)


class SVAEPlusModule(LatentShiftModule):
    """SVAE+ baseline (App. A.2.2): one condition ``c`` per cell, ``z ~ N(m_c * e_c, I)``.

    Point-estimated shifts ``e_c`` (no prior, no guide factor) and a sparse mask ``m_c`` with a
    Beta(1, 2)-Bernoulli prior by default (the paper's selected prior); ``q(z | x)`` is mean
    field. Our simplification of Lopez et al.: the prior's variance is fixed to 1 rather than
    learned per condition. ``T`` counts conditions and the dosages are their one-hot codes.

    Parameters
    ----------
    n_genes, n_perts, n_latent, hidden, n_layers, guide
        As for :class:`PerturbModule` (``guide="mf"`` only).
    mask_prior, alpha, beta_ab, temperature, mask_init, likelihood
        As for :class:`SAMSVAEModule`.
    """

    has_mask = True

    def __init__(
        self,
        n_genes: int,
        n_perts: int,
        n_latent: int = 10,
        hidden: int = 128,
        n_layers: int = 1,
        guide: str = "mf",
        mask_prior: str = "beta",
        alpha: float = 0.1,
        beta_ab: tuple[float, float] = (1.0, 2.0),
        temperature: float = 0.5,
        mask_init: float = 0.5,
        likelihood: str = "nb",
    ) -> None:
        prior = MaskPrior(mask_prior, alpha, beta_ab)
        super().__init__(n_genes, n_perts, n_latent, hidden, n_layers, guide, likelihood)
        self.mask = SparseMask(n_perts, n_latent, prior, temperature, mask_init)
        self.shift_loc = nn.Parameter(0.1 * torch.randn(n_perts, n_latent))

    def mask_probs(self) -> torch.Tensor:
        """``q(m_c = 1)`` per entry, ``[T, D]``."""
        return self.mask.probs()

    def mean_effect(self) -> torch.Tensor:
        """``e_c * q(m_c = 1)``, ``[T, D]``."""
        return self.shift_loc * self.mask_probs()

    def sample_globals(self, n_particles: int, generator: torch.Generator | None = None) -> Globals:
        """``M ~ q(M)`` with its log ratio ``[P, T]``; the shifts are parameters, not sampled."""
        mask, log_ratio = self.mask.sample(n_particles, generator)
        emb = self.shift_loc.expand(n_particles, self.n_perts, self.n_latent)
        return Globals(mask, emb, log_ratio)

    def basal_of(self, u: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        """``z - z^p``: SVAE+ encodes the whole latent, its basal part is what is left."""
        return u - shift

    def compose(
        self, u: torch.Tensor, shift: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = u`` with the conditional prior ``log N(z; m_c * e_c, I)``."""
        return u, std_normal_log_prob(u - shift)

"""Pure-torch SAMS-VAE family: networks, priors, guides, likelihood and the minibatch ELBO.

Everything here works on tensors; :mod:`liftkit.perturb.model` wraps it for AnnData. Shapes:
``P`` particles, ``B`` cells, ``T`` perturbations (or SVAE+ conditions), ``G`` genes, ``D``
latent dimensions. Particles are a leading tensor dimension: nothing loops over particles,
cells or perturbations.

Models (``kind``)
    ``"sams"``  SAMS-VAE, ``z = z_basal + sum_t d_t (e_t * m_t)`` (SAMS-VAE eq. 1).
    ``"cpa"``   CPA-VAE, the same with every mask fixed to 1 (section 2.4).
    ``"cvae"``  conditional VAE: ``z ~ N(0, I)``, decoder on ``[z, d]`` (App. A.3).
    ``"svae+"`` SVAE+: one condition per cell, ``z ~ N(m_c * e_c, I)`` with a sparse mask
                prior on the per-condition shift (App. A.2.2).
Guides (``guide``, section 2.3) for ``"sams"``/``"cpa"``
    ``"mf"``     amortised mean field (eq. 4),
    ``"corr_basal"`` correlated encoder ``q(z_basal | x, z_p)``,
    ``"corr_emb"``   correlated embeddings ``q(e_t | m_t)``,
    ``"corr"``       both (eq. 5).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from liftkit.stats import nb_log_prob_const

KINDS = ("sams", "cpa", "cvae", "svae+")
GUIDES = ("mf", "corr_basal", "corr_emb", "corr")
MASK_PRIORS = ("bernoulli", "beta")


class ResMLP(nn.Module):
    """MLP with residual hidden blocks and leaky-ReLU (SAMS-VAE App. A.3).

    ``n_layers`` hidden layers of width ``hidden``; layers after the first are residual
    (``h + act(W h)``). ``forward(x, extra)`` adds ``extra`` (already in hidden space) before the
    first activation: concatenated inputs ``[x, y]`` are evaluated as ``W_x x + W_y y`` so a part
    shared across particles (``W_x x``) is computed once and broadcast.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, n_layers: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, hidden) if d_in > 0 else None
        self.bias = nn.Parameter(torch.zeros(hidden)) if d_in == 0 else None
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers - 1))
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor | None, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x) if self.inp is not None else self.bias
        if extra is not None:
            h = h + extra
        h = F.leaky_relu(h)
        for block in self.blocks:
            h = h + F.leaky_relu(block(h))
        return self.out(h)


class _NBSoftmaxLogLik(torch.autograd.Function):
    """Fused ``sum_g x log mu - (x + theta) log(theta + mu)`` with ``mu = l softmax(logits)``.

    Forward and an analytic backward in a few passes over the ``[P, B, G]`` tensor, instead of
    autograd's chain through ``log_softmax`` and ``logaddexp`` (the decoder's output is the
    largest tensor of a training step; see benchmarks/bench_perturb.py).
    """

    @staticmethod
    def forward(ctx, logits, x, log_lib, log_theta):  # noqa: D102
        log_rho = torch.log_softmax(logits, -1)
        rho = log_rho.exp()
        theta = log_theta.exp()
        lib = log_lib.exp()
        tm = torch.addcmul(theta, rho, lib)  # theta + mu, mu = l rho
        log_tm = tm.log()
        xt = x + theta
        # sum_g x log mu - (x + theta) log(theta + mu), the sums as batched dot products
        ll = _rowdot(log_rho, x) + x.sum(-1) * log_lib.squeeze(-1) - _rowdot(log_tm, xt)
        ctx.save_for_backward(rho, tm, log_tm, x, lib, theta)
        return ll

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        rho, tm, log_tm, x, lib, theta = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        c = (x + theta) / tm  # (x + theta) / (theta + mu)
        s = lib * _rowdot(c, rho).unsqueeze(-1)  # sum_g (x + theta) mu / (theta + mu)
        # d/dlogits = x - xsum rho - (c mu - rho s) = x + rho (s - xsum - c l), times grad
        inner = torch.addcmul(g * (s - x.sum(-1, keepdim=True)), c, g * lib, value=-1.0)
        grad_logits = (inner * rho).addcmul_(g.expand_as(rho), x)
        # d/dtheta of -(x + theta) log(theta + mu), chained through theta = exp(log_theta)
        gflat = grad.reshape(1, -1)
        g_theta = gflat @ log_tm.reshape(gflat.shape[1], -1) + gflat @ c.reshape(gflat.shape[1], -1)
        return grad_logits, None, None, -theta * g_theta.squeeze(0)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``a`` ``[..., B, G]`` and ``b`` ``[B, G]`` or ``[..., B, G]``,
    as a batched matrix product (no ``[..., B, G]`` temporary)."""
    b = b.expand_as(a)
    return torch.matmul(a.unsqueeze(-2), b.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def nb_softmax_log_prob(
    logits: torch.Tensor,
    x: torch.Tensor,
    log_lib: torch.Tensor,
    log_theta: torch.Tensor,
    const: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`nb_log_prob_log_space` at ``mu = l softmax(logits)`` (SAMS-VAE sec. 2.2), fused for speed.

    ``logits`` ``[..., B, G]``, counts ``x`` ``[B, G]``, ``log_lib`` ``[B, 1]``, ``log_theta``
    ``[G]``; returns ``[..., B]``. Equal to ``nb_log_prob_log_space(x, log_softmax(logits) + log_lib,
    log_theta)`` in value and gradient (tested).
    """
    if const is None:
        const = nb_log_prob_const(x, log_theta)
    return _NBSoftmaxLogLik.apply(logits, x, log_lib, log_theta) + const


def normal_log_prob(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log density summed over the last dimension."""
    return torch.distributions.Normal(loc, scale).log_prob(value).sum(-1)


def std_normal_log_prob(value: torch.Tensor) -> torch.Tensor:
    """``log N(value; 0, I)`` summed over the last dimension."""
    return -0.5 * (value.pow(2) + math.log(2 * math.pi)).sum(-1)


def bernoulli_log_prob(value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log Bern(value; sigmoid(logits))`` summed over the last dimension.

    Written as ``value * logits - softplus(logits)`` so that a straight-through mask (``hard +
    soft - soft.detach()``, numerically 0/1 but not exactly) is accepted and differentiated.
    """
    return (value * logits - F.softplus(logits)).sum(-1)


def beta_bernoulli_log_prob(value: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Collapsed Beta-Bernoulli prior on one mask row, summed over the last dimension.

    ``pi_t ~ Beta(a, b)``, ``m_tk ~ Bern(pi_t)``, integrated: ``log B(a + s, b + D - s) -
    log B(a, b)`` with ``s = sum_k m_tk``. One ``pi`` per perturbation (our choice; the paper's
    Beta-Bernoulli option does not fix the sharing) keeps the prior a product over
    perturbations, so the minibatch reweighting of App. A.1 still applies.
    """
    d = value.shape[-1]
    s = value.sum(-1)

    def lbeta(p: torch.Tensor | float, q: torch.Tensor | float) -> torch.Tensor:
        p = torch.as_tensor(p, dtype=value.dtype, device=value.device)
        q = torch.as_tensor(q, dtype=value.dtype, device=value.device)
        return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)

    return lbeta(a + s, b + d - s) - lbeta(a, b)


def relaxed_bernoulli_st(
    logits: torch.Tensor, temperature: float, shape: tuple[int, ...], generator=None
) -> torch.Tensor:
    """Straight-through relaxed Bernoulli (Gumbel-softmax, SAMS-VAE sec. 2.3).

    The forward value ``1[logits + logistic noise > 0]`` is an exact ``Bern(sigmoid(logits))``
    sample whatever the temperature; gradients flow through ``sigmoid((logits + noise) / tau)``.
    """
    u = torch.rand(shape, device=logits.device, dtype=logits.dtype, generator=generator)
    u = u.clamp(1e-6, 1 - 1e-6)
    noisy = logits + torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid(noisy / temperature)
    hard = (noisy > 0).to(logits.dtype)
    return hard + soft - soft.detach()


class Globals(NamedTuple):
    """Global latent samples: masks and embeddings ``[P, T, D]`` (or None) and the global
    log ratio ``log p(e, m) - log q(e, m)`` per perturbation, ``[P, T]``."""

    mask: torch.Tensor | None
    emb: torch.Tensor | None
    log_ratio: torch.Tensor


class Locals(NamedTuple):
    """Per-cell terms ``[P, B]``: log-likelihood, local log ratio ``log p(x|z) + log p(z) -
    log q(z)``, and the latent ``z`` ``[P, B, D]``."""

    log_lik: torch.Tensor
    log_ratio: torch.Tensor
    z: torch.Tensor


class PerturbVAEModule(nn.Module):
    """SAMS-VAE, CPA-VAE, conditional VAE and SVAE+ as one pure-torch module.

    Parameters
    ----------
    n_genes, n_perts
        ``G`` and ``T`` (for SVAE+, ``T`` is the number of conditions).
    n_latent, hidden, n_layers
        Latent size ``D`` and MLP widths/depth (paper: 100, 400, 1).
    kind, guide
        See the module docstring.
    mask_prior, alpha, beta_ab
        ``"bernoulli"``: ``m_tk ~ Bern(alpha)`` (SAMS-VAE sec. 2.1); ``"beta"``: collapsed
        Beta(a, b)-Bernoulli (:func:`beta_bernoulli_log_prob`).
    temperature
        Relaxed-Bernoulli temperature of the straight-through mask gradient.
    mask_init
        Initial ``q(m_t)`` probability. Our choice (not fixed by the paper): 0.5, so that masks
        start undecided.
    """

    def __init__(
        self,
        n_genes: int,
        n_perts: int,
        n_latent: int = 10,
        hidden: int = 128,
        n_layers: int = 1,
        kind: str = "sams",
        guide: str = "mf",
        mask_prior: str = "bernoulli",
        alpha: float = 0.1,
        beta_ab: tuple[float, float] = (1.0, 2.0),
        temperature: float = 0.5,
        mask_init: float = 0.5,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}: choose one of {KINDS}")
        if guide not in GUIDES:
            raise ValueError(f"unknown guide {guide!r}: choose one of {GUIDES}")
        if kind in ("cvae", "svae+") and guide != "mf":
            raise ValueError(f"kind={kind!r} has no global basal/embedding pair: use guide='mf'")
        if kind == "cpa" and guide in ("corr_emb", "corr"):
            # with masks fixed to 1, q(e_t | m_t) is just q(e_t): the family equals mean field
            guide = "mf" if guide == "corr_emb" else "corr_basal"
        if mask_prior not in MASK_PRIORS:
            raise ValueError(f"unknown mask_prior {mask_prior!r}: choose one of {MASK_PRIORS}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.n_genes, self.n_perts, self.n_latent = n_genes, n_perts, n_latent
        self.kind, self.guide = kind, guide
        self.mask_prior, self.alpha, self.beta_ab = mask_prior, alpha, beta_ab
        self.temperature = temperature
        g, t, d = n_genes, n_perts, n_latent

        # encoder input standardisation (log1p counts; set from training data)
        self.register_buffer("x_mean", torch.zeros(g))
        self.register_buffer("x_scale", torch.ones(g))
        self.encoder = ResMLP(g, 2 * d, hidden, n_layers)
        self.corr_basal = guide in ("corr_basal", "corr")
        self.corr_emb = guide in ("corr_emb", "corr")
        if self.corr_basal:
            self.enc_zp = nn.Linear(d, hidden, bias=False)  # the z_p half of enc([x, z_p])
        if kind == "cvae":
            self.enc_d = nn.Linear(t, hidden, bias=False)  # q(z | x, d)
            self.dec_d = nn.Linear(t, hidden, bias=False)  # decoder on [z, d]
        self.decoder = ResMLP(d, g, hidden, n_layers)
        self.log_theta = nn.Parameter(torch.full((g,), math.log(10.0)))

        self.has_mask = kind in ("sams", "svae+")
        self.random_emb = kind in ("sams", "cpa")
        if self.has_mask:
            self.mask_logits = nn.Parameter(
                torch.full((t, d), math.log(mask_init / (1 - mask_init)))
            )
        if kind in ("sams", "cpa", "svae+"):
            self.e_loc = nn.Parameter(0.1 * torch.randn(t, d))
        if self.random_emb and not self.corr_emb:
            self.e_scale_raw = nn.Parameter(torch.full((t, d), -2.0))
        if self.corr_emb:
            # q(e_t | m_t) = N(f_emb([m_t, onehot(t)])); the one-hot part is a per-t bias row
            self.emb_net = ResMLP(d, 2 * d, hidden, 1)
            self.emb_t = nn.Parameter(0.1 * torch.randn(t, hidden))

    # ------------------------------------------------------------------ inputs
    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input: log1p counts, standardised per gene (SAMS-VAE App. A.3)."""
        return (torch.log1p(x) - self.x_mean) / self.x_scale

    @torch.no_grad()
    def set_input_stats(self, x: torch.Tensor) -> None:
        lx = torch.log1p(x)
        self.x_mean.copy_(lx.mean(0))
        self.x_scale.copy_(lx.std(0).clamp_min(1e-2))

    # ------------------------------------------------------------------ globals
    def mask_probs(self) -> torch.Tensor:
        """``q(m_t = 1)`` per entry ``[T, D]`` (ones for CPA-VAE)."""
        if self.has_mask:
            return torch.sigmoid(self.mask_logits)
        return torch.ones(self.n_perts, self.n_latent, device=self.log_theta.device)

    def emb_params(self, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of ``q(e_t)`` (mean field) or ``q(e_t | m_t)`` (correlated)."""
        if self.corr_emb:
            out = self.emb_net(mask, extra=self.emb_t)
            loc, raw = out.chunk(2, -1)
            return loc, F.softplus(raw) + 1e-4
        return self.e_loc, F.softplus(self.e_scale_raw) + 1e-4

    def mask_prior_log_prob(self, mask: torch.Tensor) -> torch.Tensor:
        if self.mask_prior == "bernoulli":
            a = self.alpha
            return (mask * math.log(a) + (1 - mask) * math.log1p(-a)).sum(-1)
        return beta_bernoulli_log_prob(mask, *self.beta_ab)

    def sample_globals(self, n_particles: int, generator=None) -> Globals:
        """Draw ``(M, E) ~ q`` and the global log ratio per perturbation (App. A.1)."""
        p, t, d = n_particles, self.n_perts, self.n_latent
        dev = self.log_theta.device
        log_ratio = torch.zeros(p, t, device=dev)
        mask = emb = None
        if self.has_mask:
            mask = relaxed_bernoulli_st(self.mask_logits, self.temperature, (p, t, d), generator)
            log_ratio = (
                log_ratio
                + self.mask_prior_log_prob(mask)
                - bernoulli_log_prob(mask, self.mask_logits)
            )
        if self.random_emb:
            loc, scale = self.emb_params(mask if self.corr_emb else None)
            eps = torch.randn((p, t, d), device=dev, generator=generator)
            emb = loc + scale * eps
            # log q(e) for a reparameterised Gaussian sample: -0.5 eps^2 - log scale - const
            log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_ratio = log_ratio + std_normal_log_prob(emb) - log_q
        elif self.kind == "svae+":
            emb = self.e_loc.expand(p, t, d)  # point-estimated shifts: no prior, no q
        return Globals(mask, emb, log_ratio)

    def perturbation_shift(self, glob: Globals, d: torch.Tensor) -> torch.Tensor:
        """``z_p = sum_t d_t (e_t * m_t)`` (SAMS-VAE eq. 1) for a batch: ``[P, B, D]``."""
        effect = glob.emb if glob.mask is None else glob.emb * glob.mask
        return torch.matmul(d, effect)  # [B, T] @ [P, T, D]

    # ------------------------------------------------------------------ locals
    def decode_log_rho(self, z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``log rho = log_softmax(f_theta(z))`` over genes (section 2.2); CVAE decodes ``[z, d]``."""
        extra = self.dec_d(d) if self.kind == "cvae" else None
        return F.log_softmax(self.decoder(z, extra), -1)

    def local_terms(
        self,
        x: torch.Tensor,
        d: torch.Tensor,
        glob: Globals,
        n_particles: int,
        const: torch.Tensor | None = None,
        generator=None,
    ) -> Locals:
        """Sample the per-cell latent and return its log-likelihood and log ratio ``[P, B]``.

        ``x`` are counts ``[B, G]``, ``d`` dosages ``[B, T]``; the library size
        ``l_i = sum_j x_ij`` is observed (section 2.2).
        """
        x_in = self.standardise(x)
        lib = x.sum(-1, keepdim=True).clamp_min(1.0)
        extra = None
        shift = None
        if self.kind in ("sams", "cpa", "svae+"):
            shift = self.perturbation_shift(glob, d)
            if self.corr_basal:
                extra = self.enc_zp(shift)  # enc([x, z_p]) = W_x x + W_z z_p
        if self.kind == "cvae":
            extra = self.enc_d(d)
        out = self.encoder(x_in, extra)
        loc, raw = out.chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        shape = (n_particles, *loc.shape[-2:])
        eps = torch.randn(shape, device=x.device, generator=generator)
        u = loc + scale * eps  # z_basal (sams/cpa) or z (cvae/svae+)
        log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        if self.kind in ("sams", "cpa"):
            z = u + shift
            log_prior = std_normal_log_prob(u)
        elif self.kind == "svae+":
            z = u
            log_prior = std_normal_log_prob(u - shift)  # p(z | c) = N(m_c * e_c, I)
        else:
            z = u
            log_prior = std_normal_log_prob(u)
        extra = self.dec_d(d) if self.kind == "cvae" else None
        log_lik = nb_softmax_log_prob(self.decoder(z, extra), x, lib.log(), self.log_theta, const)
        return Locals(log_lik, log_lik + log_prior - log_q, z)

    def log_ratios(
        self, x: torch.Tensor, d: torch.Tensor, n_particles: int, generator=None
    ) -> tuple[Globals, Locals]:
        """Global ``[P, T]`` and local ``[P, B]`` log ratios for one minibatch."""
        glob = self.sample_globals(n_particles, generator)
        loc = self.local_terms(x, d, glob, n_particles, generator=generator)
        return glob, loc

    def loss(
        self, x: torch.Tensor, d: torch.Tensor, n_t: torch.Tensor, n_particles: int = 1
    ) -> torch.Tensor:
        """Negative minibatch ELBO of App. A.1 divided by the batch size (for the optimiser)."""
        glob, loc = self.log_ratios(x, d, n_particles)
        return -minibatch_elbo(glob.log_ratio, loc.log_ratio, d, n_t) / x.shape[0]


def minibatch_elbo(
    global_log_ratio: torch.Tensor,
    local_log_ratio: torch.Tensor,
    d_batch: torch.Tensor,
    n_t: torch.Tensor,
) -> torch.Tensor:
    """Minibatch ELBO of SAMS-VAE App. A.1 (the negative of ``l_mb``).

    ``(1/P) sum_p [ sum_t (n~_t / n_t) log p(e_t, m_t)/q(e_t, m_t) + sum_{i in B} log
    p(x_i, z_i)/q(z_i) ]`` with ``n~_t = sum_{i in B} d_it`` and ``n_t = sum_i d_it`` over the
    training set, so that its expectation over uniformly drawn batches is ``|B|/N`` times the
    full ELBO. Perturbations never seen in training (``n_t = 0``) get weight 0.

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
    """
    n_tilde = d_batch.sum(0)
    w = torch.where(n_t > 0, n_tilde / n_t.clamp_min(1e-12), torch.zeros_like(n_tilde))
    return ((global_log_ratio * w).sum(-1) + local_log_ratio.sum(-1)).mean(0)

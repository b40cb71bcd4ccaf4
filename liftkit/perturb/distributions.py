"""Densities and samplers of the SAMS-VAE family, written out for speed and straight-through use.

- Priors: :func:`std_normal_log_prob` (``p(e_t)``, ``p(z^b_i)``, sec. 2.1),
  :func:`bernoulli_log_prob` (``p(m_t)`` and ``q(m_t)``), :func:`beta_bernoulli_log_prob` (the
  Beta-Bernoulli mask prior of sec. 2.1).
- Reparameterised samplers with their log densities: :func:`gaussian_rsample` (``q(e_t)``,
  ``q(z^b_i)``) and :func:`relaxed_bernoulli_st` (``q(m_t)``, sec. 2.3).
- The likelihood ``p(x_i | z_i)`` of sec. 2.2 with its softmax fused in:
  :func:`nb_softmax_log_prob`. The plain negative binomial lives in :mod:`liftkit.stats`.

Every log density is summed over its last dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from liftkit.stats import nb_log_prob_const

_LOG_2PI = math.log(2 * math.pi)


def std_normal_log_prob(value: torch.Tensor) -> torch.Tensor:
    """``log N(value; 0, I)`` summed over the last dimension (the priors of sec. 2.1)."""
    return -0.5 * (value.pow(2) + _LOG_2PI).sum(-1)


def bernoulli_log_prob(value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log Bern(value; sigmoid(logits))`` summed over the last dimension.

    Written as ``value * logits - softplus(logits)`` so that a straight-through mask (``hard +
    soft - soft.detach()``, numerically 0/1 but not exactly) is accepted and differentiated.
    """
    return (value * logits - F.softplus(logits)).sum(-1)


def beta_bernoulli_log_prob(value: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Collapsed Beta-Bernoulli prior on one mask row, summed over the last dimension.

    ``pi_t ~ Beta(a, b)``, ``m_tk ~ Bern(pi_t)``, integrated: ``log B(a + s, b + D - s) -
    log B(a, b)`` with ``s = sum_k m_tk`` (the Beta-Bernoulli option of SAMS-VAE sec. 2.1). One
    ``pi`` per perturbation (our choice; the paper does not fix the sharing) keeps the prior a
    product over perturbations, so the minibatch reweighting of App. A.1 still applies.
    """
    d = value.shape[-1]
    s = value.sum(-1)

    def lbeta(p: torch.Tensor | float, q: torch.Tensor | float) -> torch.Tensor:
        p = torch.as_tensor(p, dtype=value.dtype, device=value.device)
        q = torch.as_tensor(q, dtype=value.dtype, device=value.device)
        return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)

    return lbeta(a + s, b + d - s) - lbeta(a, b)


def gaussian_rsample(
    loc: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised draw from ``N(loc, diag(scale^2))`` and its log density.

    Parameters
    ----------
    loc, scale
        Broadcastable to ``shape``.
    shape
        Shape of the draw, particles first.
    generator
        Torch generator of the standard-normal noise (None: the global one).

    Returns
    -------
    sample, log_q
        ``loc + scale * eps`` and ``log N(sample; loc, scale)`` summed over the last
        dimension. ``log_q`` is computed from ``eps``, which is exact and cheaper than from the
        sample.
    """
    eps = torch.randn(shape, device=loc.device, generator=generator)
    sample = loc + scale * eps
    log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * _LOG_2PI).sum(-1)
    return sample, log_q


def relaxed_bernoulli_st(
    logits: torch.Tensor,
    temperature: float,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Straight-through relaxed Bernoulli (Gumbel-softmax, SAMS-VAE sec. 2.3).

    The forward value ``1[logits + logistic noise > 0]`` is an exact ``Bern(sigmoid(logits))``
    sample whatever the temperature; gradients flow through ``sigmoid((logits + noise) / tau)``.

    Parameters
    ----------
    logits
        Broadcastable to ``shape``.
    temperature
        ``tau`` of the relaxation (only the gradient depends on it).
    shape
        Shape of the draw, particles first.
    generator
        Torch generator of the uniform noise (None: the global one).
    """
    u = torch.rand(shape, device=logits.device, dtype=logits.dtype, generator=generator)
    u = u.clamp(1e-6, 1 - 1e-6)
    noisy = logits + torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid(noisy / temperature)
    hard = (noisy > 0).to(logits.dtype)
    return hard + soft - soft.detach()


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
    """``log p(x_i | z_i)`` of SAMS-VAE sec. 2.2: NB counts with mean ``l_i softmax(f(z_i))``.

    Equal in value and gradient (tested) to :func:`liftkit.stats.nb_log_prob_log_space` at
    ``log mu = log_softmax(logits) + log_lib``, fused for speed.

    Parameters
    ----------
    logits
        Decoder output ``[..., B, G]`` (leading particle dimensions broadcast).
    x
        Counts ``[B, G]``.
    log_lib
        Log library sizes ``[B, 1]`` (observed, sec. 2.2).
    log_theta
        Log inverse dispersion ``[G]``.
    const
        :func:`liftkit.stats.nb_log_prob_const` of ``(x, log_theta)`` if already computed.

    Returns
    -------
    torch.Tensor
        ``[..., B]`` log-likelihood per cell.
    """
    if const is None:
        const = nb_log_prob_const(x, log_theta)
    return _NBSoftmaxLogLik.apply(logits, x, log_lib, log_theta) + const

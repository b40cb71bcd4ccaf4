"""Densities and samplers of the SAMS-VAE family, written out for speed and straight-through use.

- Priors: :func:`std_normal_log_prob` (``p(e_t)``, ``p(z^b_i)``, sec. 2.1),
  :func:`bernoulli_log_prob` (``p(m_t)`` and ``q(m_t)``), :func:`beta_bernoulli_log_prob` (the
  Beta-Bernoulli mask prior of sec. 2.1).
- Reparameterised samplers with their log densities: :func:`gaussian_rsample` (``q(e_t)``,
  ``q(z^b_i)``) and :func:`relaxed_bernoulli_st` (``q(m_t)``, sec. 2.3).
- The likelihood ``p(x_i | z_i)`` of sec. 2.2 with its softmax fused in:
  :func:`nb_softmax_log_prob`. The plain negative binomial lives in :mod:`liftkit.stats`.
- The non-collapsed Beta-Bernoulli mask prior's probabilities: :func:`beta_rsample`
  (reparameterised ``Beta`` draws from a seeded generator) and :func:`beta_kl`.
- The likelihoods of :data:`LIKELIHOODS` as ``torch.distributions`` objects
  (:func:`count_distribution`), their log density (:func:`count_log_prob`) and seeded draws
  (:func:`draw_counts`).

Every log density is summed over its last dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from liftkit.stats import nb_log_prob_const

_LOG_2PI = math.log(2 * math.pi)

#: Observation models ``p(x_ij | z_i)`` with mean ``mu_ij = l_i rho_ij`` (sec. 2.2): negative
#: binomial (the paper's), Poisson, and a Normal with a per-gene standard deviation.
LIKELIHOODS = ("nb", "poisson", "normal")


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


def beta_rsample(
    conc1: torch.Tensor,
    conc0: torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised draw from ``Beta(conc1, conc0)`` and its log density.

    ``p = g1 / (g1 + g0)`` with ``g ~ Gamma(conc, 1)`` drawn by ``torch._standard_gamma``, whose
    gradient with respect to the concentration is the implicit reparameterisation gradient
    (Figurnov et al. 2018; what ``torch.distributions.Beta.rsample`` uses, here with a seeded
    generator). The draw is clamped into ``[eps, 1 - eps]`` so that ``log p`` and
    ``log (1 - p)`` stay finite in float32; ``log_q`` is
    ``torch.distributions.Beta(conc1, conc0).log_prob`` of the clamped draw, elementwise (not
    summed).

    Parameters
    ----------
    conc1, conc0
        Concentrations, broadcastable to ``shape``.
    shape
        Shape of the draw, particles first.
    generator
        Torch generator (None: the global one).
    eps
        Clamp of the draw.

    Examples
    --------
    >>> c = torch.tensor([2.0, 5.0])
    >>> p, log_q = beta_rsample(c, c.flip(0), (3, 2), torch.Generator().manual_seed(0))
    >>> p.shape, bool(((p > 0) & (p < 1)).all())
    (torch.Size([3, 2]), True)
    """
    g1 = torch._standard_gamma(conc1.expand(shape).contiguous(), generator=generator)
    g0 = torch._standard_gamma(conc0.expand(shape).contiguous(), generator=generator)
    p = (g1 / (g1 + g0)).clamp(eps, 1 - eps)
    log_q = torch.distributions.Beta(conc1, conc0, validate_args=False).log_prob(p)
    return p, log_q


def beta_kl(
    conc1: torch.Tensor, conc0: torch.Tensor, a: float, b: float
) -> torch.Tensor:
    """``KL(Beta(conc1, conc0) || Beta(a, b))`` elementwise, by ``torch.distributions``.

    The closed form is ``log B(a, b) - log B(c1, c0) + (c1 - a) psi(c1) + (c0 - b) psi(c0)
    + (a + b - c1 - c0) psi(c1 + c0)`` (tested against it).

    Examples
    --------
    >>> float(beta_kl(torch.tensor(2.0), torch.tensor(3.0), 2.0, 3.0))
    0.0
    """
    q = torch.distributions.Beta(conc1, conc0)
    prior = torch.distributions.Beta(
        torch.full_like(conc1, a), torch.full_like(conc0, b)
    )
    return torch.distributions.kl_divergence(q, prior)


def count_distribution(
    likelihood: str, mu: torch.Tensor, log_disp: torch.Tensor
) -> torch.distributions.Distribution:
    """The observation model ``p(x | mu)`` of :data:`LIKELIHOODS` as a torch distribution.

    Parameters
    ----------
    likelihood
        ``"nb"``: ``NB(mean mu, inverse dispersion theta = exp(log_disp))`` (sec. 2.2);
        ``"poisson"``: ``Poisson(mu)``; ``"normal"``: ``N(mu, sd = exp(log_disp))``.
    mu
        Means ``[..., G]`` (``l_i rho_ij``).
    log_disp
        ``log theta`` (NB) or ``log sd`` (Normal) per gene ``[G]``; unused by the Poisson.

    Examples
    --------
    >>> dist = count_distribution("poisson", torch.tensor([2.0]), torch.zeros(1))
    >>> round(float(dist.log_prob(torch.tensor([0.0]))), 4)
    -2.0
    """
    if likelihood == "nb":
        # mean theta * exp(logits) = mu with inverse dispersion theta
        return torch.distributions.NegativeBinomial(
            total_count=log_disp.exp(), logits=mu.log() - log_disp, validate_args=False
        )
    if likelihood == "poisson":
        return torch.distributions.Poisson(mu, validate_args=False)
    if likelihood == "normal":
        return torch.distributions.Normal(mu, log_disp.exp(), validate_args=False)
    raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {LIKELIHOODS}")


def count_log_prob(
    likelihood: str,
    logits: torch.Tensor,
    x: torch.Tensor,
    log_lib: torch.Tensor,
    log_disp: torch.Tensor,
    const: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p(x_i | z_i)`` summed over genes, ``mu = l_i softmax(logits)``, ``[..., B]``.

    The NB goes through the fused :func:`nb_softmax_log_prob` (``const`` as there); the Poisson
    and the Normal through :func:`count_distribution`.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 0.0]])
    >>> lp = count_log_prob("poisson", torch.zeros(1, 2), x, torch.zeros(1, 1), torch.zeros(2))
    >>> round(float(lp), 4)  # two Poisson(0.5) genes: log(0.5) - 0.5 - 0.5
    -1.6931
    """
    if likelihood == "nb":
        return nb_softmax_log_prob(logits, x, log_lib, log_disp, const)
    mu = (torch.log_softmax(logits, -1) + log_lib).exp()
    return count_distribution(likelihood, mu, log_disp).log_prob(x).sum(-1)


def draw_counts(
    likelihood: str,
    mu: torch.Tensor,
    log_disp: torch.Tensor,
    generator: torch.Generator | None = None,
    n_samples: int | None = None,
) -> torch.Tensor:
    """Seeded draws from :func:`count_distribution` (``n_samples`` leading, if given).

    The NB as a gamma-Poisson mixture (``lambda ~ Gamma(theta, theta / mu)``,
    ``x ~ Poisson(lambda)``), the Poisson by ``torch.poisson``, the Normal as ``mu + sd eps``:
    every draw from ``generator``, which ``torch.distributions`` samplers do not take.

    Examples
    --------
    >>> x = draw_counts("poisson", torch.full((2, 3), 4.0), torch.zeros(3),
    ...                 torch.Generator().manual_seed(0), n_samples=5)
    >>> x.shape
    torch.Size([5, 2, 3])
    """
    shape = mu.shape if n_samples is None else (n_samples, *mu.shape)
    if likelihood == "nb":
        theta = log_disp.exp()
        rate = torch._standard_gamma(theta.expand(shape).contiguous(), generator=generator)
        return torch.poisson(rate * mu / theta, generator=generator)
    if likelihood == "poisson":
        return torch.poisson(mu.expand(shape).contiguous(), generator=generator)
    if likelihood == "normal":
        eps = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + log_disp.exp() * eps
    raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {LIKELIHOODS}")

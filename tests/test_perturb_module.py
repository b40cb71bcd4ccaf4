"""SAMS-VAE pieces against hand computations: likelihood, priors, guide, ELBO, IWELBO."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from liftkit.perturb.distributions import (
    bernoulli_log_prob,
    beta_bernoulli_log_prob,
    nb_softmax_log_prob,
    relaxed_bernoulli_st,
)
from liftkit.perturb.guides import GUIDES, guide_flags, guide_name
from liftkit.perturb.modules import (
    ConditionalVAEModule,
    CPAVAEModule,
    MaskPrior,
    SAMSVAEModule,
    SVAEPlusModule,
)
from liftkit.perturb.objectives import iwelbo, minibatch_elbo, negative_elbo
from liftkit.stats import nb_log_prob_log_space


def test_nb_log_prob_matches_torch_and_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((4, 7), 5.0), generator=g)
    log_mu = torch.randn(3, 4, 7, generator=g) + 1.0  # 3 particles
    log_theta = torch.randn(7, generator=g)
    ours = nb_log_prob_log_space(x, log_mu, log_theta)
    theta = log_theta.exp()
    ref = torch.distributions.NegativeBinomial(theta, logits=log_mu - log_theta).log_prob(x).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    mu, th = log_mu.exp().numpy(), theta.numpy()
    sp_ref = stats.nbinom.logpmf(x.numpy(), th, th / (th + mu)).sum(-1)
    np.testing.assert_allclose(ours.numpy(), sp_ref, rtol=1e-5, atol=1e-3)


def test_bernoulli_and_beta_bernoulli_priors():
    m = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0])
    p = torch.sigmoid(logits).numpy()
    ref = stats.bernoulli.logpmf(m.numpy(), p).sum(-1)
    np.testing.assert_allclose(bernoulli_log_prob(m, logits).numpy(), ref, rtol=1e-6)
    # collapsed Beta(a,b)-Bernoulli: betabinom pmf of s divided by the C(D, s) orderings
    a, b, d = 1.0, 2.0, 4
    s = m.sum(-1).numpy()
    ref_bb = stats.betabinom.logpmf(s, d, a, b) - np.log(special.comb(d, s))
    np.testing.assert_allclose(beta_bernoulli_log_prob(m, a, b).numpy(), ref_bb, rtol=1e-5)


def test_relaxed_bernoulli_forward_is_exact_bernoulli():
    logits = torch.tensor([-1.5, 0.0, 2.0])
    g = torch.Generator().manual_seed(1)
    n = 20000
    m = relaxed_bernoulli_st(logits, temperature=0.3, shape=(n, 3), generator=g)
    assert set(torch.unique(m.round()).tolist()) <= {0.0, 1.0}
    freq = m.mean(0).numpy()
    p = torch.sigmoid(logits).numpy()
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 4 * se)
    # straight-through: gradient reaches the logits
    lg = logits.clone().requires_grad_(True)
    relaxed_bernoulli_st(lg, 0.3, (5, 3), generator=g).sum().backward()
    assert lg.grad is not None and lg.grad.abs().sum() > 0


def _tiny(cls=SAMSVAEModule, guide="mf", seed=0):
    torch.manual_seed(seed)
    kw = {"alpha": 0.2} if cls.has_mask else {}
    mod = cls(n_genes=5, n_perts=3, n_latent=2, hidden=8, guide=guide, **kw)
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((6, 5), 4.0), generator=g) + 1.0
    d = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float32
    )
    mod.set_input_stats(x)
    return mod, x, d


def _norm_logpdf(v, loc, scale):
    return stats.norm.logpdf(v, loc, scale).sum(-1)


@pytest.mark.parametrize("guide", ["mf", "corr"])
def test_sams_log_ratios_match_hand_computation(guide):
    """SAMS-VAE eq. 2 / 4-5 evaluated by hand (scipy) at the sampled latents."""
    mod, x, d = _tiny(SAMSVAEModule, guide)
    with torch.no_grad():
        glob, loc = mod(x, d, n_particles=2, generator=torch.Generator().manual_seed(3))
        m, e = glob.mask.numpy().round(), glob.emb.numpy()  # straight-through: 1 +- ulp
        logits = mod.mask.guide.logits.numpy()
        e_loc, e_scale = (t.numpy() for t in mod.embedding.params(glob.mask))
        g_ref = (
            _norm_logpdf(e, 0, 1)
            + stats.bernoulli.logpmf(m, 0.2).sum(-1)
            - _norm_logpdf(e, e_loc, e_scale)
            - stats.bernoulli.logpmf(m, special.expit(logits)).sum(-1)
        )
        np.testing.assert_allclose(glob.log_ratio.numpy(), g_ref, rtol=1e-4, atol=1e-4)

        z = loc.z.numpy()
        zp = d.numpy() @ (e * m)  # eq. 1, [P, B, D]
        zb = z - zp
        q_loc, q_scale = mod.encoder(x, torch.as_tensor(zp) if mod.correlated_basal else None)
        rho = special.softmax(mod.decoder(torch.as_tensor(z)).numpy(), -1)
        lib = x.sum(1, keepdim=True).numpy()
        mu = lib * rho
        th = mod.log_theta.exp().numpy()
        loglik = stats.nbinom.logpmf(x.numpy(), th, th / (th + mu)).sum(-1)
        l_ref = loglik + _norm_logpdf(zb, 0, 1) - _norm_logpdf(zb, q_loc.numpy(), q_scale.numpy())
        np.testing.assert_allclose(loc.log_lik.numpy(), loglik, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(loc.log_ratio.numpy(), l_ref, rtol=1e-4, atol=1e-3)


def test_cpa_masks_are_ones_and_cvae_has_no_globals():
    mod, x, d = _tiny(CPAVAEModule, "corr_basal")
    glob, _ = mod(x, d, 2)
    assert glob.mask is None and torch.all(mod.mask_probs() == 1)
    mod, x, d = _tiny(ConditionalVAEModule, "mf")
    glob, loc = mod(x, d, 2)
    assert glob.emb is None and torch.all(glob.log_ratio == 0)
    with pytest.raises(ValueError, match="no latent masks"):
        mod.mask_probs()
    with pytest.raises(ValueError, match="guide"):
        ConditionalVAEModule(5, 3, guide="corr")
    with pytest.raises(ValueError, match="guide"):
        SVAEPlusModule(5, 3, guide="corr_basal")


def test_guide_families():
    """Section 2.3: four families; CPA-VAE's masks are 1, so q(e | m) = q(e) there."""
    assert [guide_name(*guide_flags(g)) for g in GUIDES] == list(GUIDES)
    with pytest.raises(ValueError, match="unknown guide"):
        guide_flags("full")
    assert CPAVAEModule(5, 3, guide="corr_emb").guide == "mf"
    assert CPAVAEModule(5, 3, guide="corr").guide == "corr_basal"
    for g in GUIDES:
        mod = SAMSVAEModule(5, 3, n_latent=2, hidden=8, guide=g)
        assert mod.guide == g
        assert (mod.encoder.cond is not None) == mod.correlated_basal
    with pytest.raises(ValueError, match="mask_prior"):
        MaskPrior("spike")
    with pytest.raises(ValueError, match="alpha"):
        SAMSVAEModule(5, 3, alpha=1.0)
    with pytest.raises(ValueError, match="temperature"):
        SVAEPlusModule(5, 3, temperature=0.0)


def test_svae_plus_prior_is_centred_on_the_masked_shift():
    """App. A.2.2: log p(z | c) = log N(z; m_c * e_c, I); the shift is not added to z."""
    mod, x, d = _tiny(SVAEPlusModule, "mf")
    with torch.no_grad():
        glob, loc = mod(x, d, 3, generator=torch.Generator().manual_seed(1))
        shift = d @ (glob.emb * glob.mask)
        loc_q, scale_q = mod.encoder(x)
        log_q = _norm_logpdf(loc.z.numpy(), loc_q.numpy(), scale_q.numpy())
        ref = loc.log_lik.numpy() + _norm_logpdf((loc.z - shift).numpy(), 0, 1) - log_q
        np.testing.assert_allclose(loc.log_ratio.numpy(), ref, rtol=1e-4, atol=1e-3)
        # no embedding prior or guide: the global ratio is the mask's alone
        m = glob.mask.numpy().round()
        probs = mod.mask_probs().numpy()
        ref_g = mod.mask.prior.log_prob(glob.mask).numpy() - stats.bernoulli.logpmf(m, probs).sum(
            -1
        )
        np.testing.assert_allclose(glob.log_ratio.numpy(), ref_g, rtol=1e-5, atol=1e-4)


def test_minibatch_reweighting_identity():
    """App. A.1: E_B[l_mb] = |B|/N ELBO, exactly, over all batches of size |B| (fixed draws)."""
    mod, x, d = _tiny(SAMSVAEModule, "corr")
    with torch.no_grad():
        glob, loc = mod(x, d, n_particles=3, generator=torch.Generator().manual_seed(5))
    n_t = d.sum(0)
    n = x.shape[0]
    full = minibatch_elbo(glob.log_ratio, loc.log_ratio, d, n_t)
    # the full-data "minibatch" is the full ELBO: global terms weighted 1 (all seen perturbations)
    ref = (glob.log_ratio.sum(-1) + loc.log_ratio.sum(-1)).mean(0)
    torch.testing.assert_close(full, ref)
    for size in (1, 2, 3):
        vals = [
            minibatch_elbo(glob.log_ratio, loc.log_ratio[:, list(b)], d[list(b)], n_t)
            for b in itertools.combinations(range(n), size)
        ]
        torch.testing.assert_close(torch.stack(vals).mean(), size / n * full, rtol=1e-5, atol=1e-4)
    # a partition into batches sums to the full ELBO
    parts = [[0, 1], [2, 3], [4, 5]]
    total = sum(minibatch_elbo(glob.log_ratio, loc.log_ratio[:, p], d[p], n_t) for p in parts)
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-4)


def test_iwelbo_above_elbo_and_increasing_in_k():
    """IWELBO_K is non-decreasing in K in expectation (Burda et al.); K = 1 is the ELBO."""
    mod, _, _ = _tiny(SAMSVAEModule, "corr", seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((300, 5), 6.0), generator=g) + 1.0
    d = torch.zeros(300, 3)
    d[torch.arange(300), torch.arange(300) % 3] = 1.0
    mod.set_input_stats(x)
    k1 = iwelbo(mod, x, d, 1, seed=1)
    k10 = iwelbo(mod, x, d, 10, seed=2)
    k100 = iwelbo(mod, x, d, 100, seed=3, max_elements=5 * 300 * 7)  # forces particle chunks
    for lo, hi in ((k1, k10), (k10, k100)):
        diff = hi - lo
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        assert diff.mean() > 3 * se, (diff.mean(), se)
    assert np.all(np.isfinite(k100))


def test_fused_nb_softmax_matches_autograd_reference():
    g = torch.Generator().manual_seed(4)
    x = torch.poisson(torch.full((3, 6), 3.0), generator=g).double()
    log_lib = x.sum(1, keepdim=True).clamp_min(1).log()
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    log_theta = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ours = nb_softmax_log_prob(logits, x, log_lib, log_theta)
    ref = nb_log_prob_log_space(x, torch.log_softmax(logits, -1) + log_lib, log_theta)
    torch.testing.assert_close(ours, ref)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((ours * w).sum(), (logits, log_theta))
    gb = torch.autograd.grad((ref * w).sum(), (logits, log_theta))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(
        lambda lg, lt: nb_softmax_log_prob(lg, x, log_lib, lt), (logits, log_theta)
    )


def test_negative_elbo_is_the_scaled_minibatch_elbo():
    """The training loss is -l_mb / |B| (App. A.1) of the module's own draws."""
    mod, x, d = _tiny(SAMSVAEModule, "corr")
    n_t = d.sum(0) * 10
    torch.manual_seed(7)
    loss = negative_elbo(mod, x, d, n_t, n_particles=2)
    torch.manual_seed(7)
    glob, loc = mod(x, d, 2)
    ref = -minibatch_elbo(glob.log_ratio, loc.log_ratio, d, n_t) / x.shape[0]
    assert torch.equal(loss, ref)
    loss.backward()
    assert mod.mask.guide.logits.grad is not None and mod.embedding.onehot.grad is not None

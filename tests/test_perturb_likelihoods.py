"""SAMS-VAE options beside the paper's defaults, against scipy and closed forms: the
non-collapsed Beta-Bernoulli mask prior and its Beta guide, Poisson and Normal likelihoods,
draws of new cells from a fitted model, MCC after latent matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special, stats

from liftkit.metrics import mean_corr_coef
from liftkit.perturb import SAMSVAE
from liftkit.perturb.distributions import (
    beta_kl,
    beta_rsample,
    count_distribution,
    count_log_prob,
    draw_counts,
)
from liftkit.perturb.experiment import fit_model
from liftkit.perturb.modules import MaskPrior, SAMSVAEModule, SparseMask


def test_beta_draws_follow_scipy_beta_and_carry_gradients():
    c = torch.tensor([0.7, 2.0, 5.0], requires_grad=True)
    d = torch.tensor([1.5, 2.0, 1.2], requires_grad=True)
    p, log_q = beta_rsample(c, d, (4000, 3), torch.Generator().manual_seed(0))
    cn, dn = c.detach().numpy(), d.detach().numpy()
    for k in range(3):
        assert stats.kstest(p[:, k].detach().numpy(), stats.beta(cn[k], dn[k]).cdf).pvalue > 1e-3
    np.testing.assert_allclose(log_q.detach().numpy(),
                               stats.beta.logpdf(p.detach().numpy(), cn, dn), rtol=1e-4, atol=1e-4)
    p.mean(0).sum().backward()  # implicit reparameterisation: d E[p] / dc = d / (c + d)^2
    assert c.grad is not None and (c.grad > 0).all() and (d.grad < 0).all()
    same, _ = beta_rsample(c, d, (4000, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(p, same)


def test_beta_kl_matches_the_closed_form():
    c, d, a, b = np.array([0.5, 2.0, 3.0]), np.array([1.0, 2.0, 0.7]), 1.0, 2.0
    closed = (special.betaln(a, b) - special.betaln(c, d) + (c - a) * special.digamma(c)
              + (d - b) * special.digamma(d) + (a + b - c - d) * special.digamma(c + d))
    ours = beta_kl(torch.tensor(c), torch.tensor(d), a, b).numpy()
    np.testing.assert_allclose(ours, closed, rtol=1e-10)
    assert ours[0] > 0 and beta_kl(torch.tensor(a), torch.tensor(b), a, b) == 0


def test_non_collapsed_prior_log_prob_is_beta_times_bernoulli():
    prior = MaskPrior("beta_bernoulli", beta_ab=(1.0, 3.0))
    m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    p = torch.tensor([[0.2, 0.6, 0.9], [0.05, 0.3, 0.5]])
    ref = (stats.beta.logpdf(p.numpy(), 1.0, 3.0)
           + stats.bernoulli.logpmf(m.numpy(), p.numpy())).sum(-1)
    np.testing.assert_allclose(prior.log_prob(m, p).numpy(), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="probabilities"):
        prior.log_prob(m)
    # "collapsed" is the existing collapsed prior under the name the option list gives
    np.testing.assert_array_equal(MaskPrior("collapsed").log_prob(m).numpy(),
                                  MaskPrior("beta").log_prob(m).numpy())
    with pytest.raises(ValueError, match="mask_prior"):
        MaskPrior("kumaraswamy")


def test_non_collapsed_mask_ratio_averages_to_its_closed_form():
    """E_q[log p(m | p) + log p(p) - log q(p) - log q(m)] by hand: per entry
    q (psi(c) - psi(c + d)) + (1 - q)(psi(d) - psi(c + d)) + H(Bern(q)), minus KL(q(p) || p(p))."""
    a, b = 1.0, 2.0
    mask = SparseMask(2, 3, MaskPrior("beta_bernoulli", beta_ab=(a, b)))
    with torch.no_grad():
        mask.guide.logits.copy_(torch.tensor([[-1.0, 0.0, 2.0], [0.5, -2.0, 1.0]]))
        mask.prob_guide.raw1.copy_(torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.5, 2.5]]))
        mask.prob_guide.raw0.copy_(torch.tensor([[2.0, 1.0, 1.5], [0.8, 2.2, 1.2]]))
    with torch.no_grad():
        _, ratio = mask.sample(40000, torch.Generator().manual_seed(3))
    q = torch.sigmoid(mask.guide.logits).detach().double().numpy()
    c, d = (t.detach().double().numpy() for t in mask.prob_guide.concentrations())
    e_log_p = special.digamma(c) - special.digamma(c + d)
    e_log_1mp = special.digamma(d) - special.digamma(c + d)
    entropy = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    kl = (special.betaln(a, b) - special.betaln(c, d) + (c - a) * special.digamma(c)
          + (d - b) * special.digamma(d) + (a + b - c - d) * special.digamma(c + d))
    closed = (q * e_log_p + (1 - q) * e_log_1mp + entropy - kl).sum(-1)
    np.testing.assert_allclose(ratio.double().mean(0).numpy(), closed, atol=0.05)
    np.testing.assert_allclose(mask.prob_guide.kl(a, b).detach().numpy(), kl.sum(-1), rtol=1e-5)


def test_beta_bernoulli_prior_trains_and_starts_at_its_prior(small):
    module = SAMSVAEModule(20, 6, n_latent=3, hidden=8, mask_prior="beta_bernoulli",
                           beta_ab=(1.0, 4.0))
    c, d = module.mask.prob_guide.concentrations()
    torch.testing.assert_close(c, torch.full((6, 3), 1.0))
    torch.testing.assert_close(d, torch.full((6, 3), 4.0))
    model = fit_model("SAMS-VAE", "corr", small, steps=15, batch_size=64, n_latent=3, hidden=8,
                      mask_prior="beta_bernoulli", val_frac=0.0, device="cpu")
    assert np.isfinite(model.history).all()
    raw = model.module.mask.prob_guide.raw1
    assert not torch.allclose(raw, torch.full_like(raw, raw.flatten()[0].item()))  # it moved
    assert np.isfinite(model.iwelbo(small[:20], n_particles=3)).all()


@pytest.mark.parametrize("likelihood", ["nb", "poisson", "normal"])
def test_count_log_prob_matches_scipy(likelihood):
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((4, 6), 3.0), generator=g)
    logits = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    log_lib = x.sum(-1, keepdim=True).log().double()
    log_disp = torch.randn(6, generator=g, dtype=torch.float64)
    ours = count_log_prob(likelihood, logits, x.double(), log_lib, log_disp).numpy()
    mu = (special.softmax(logits.numpy(), -1) * np.exp(log_lib.numpy()))
    disp = np.exp(log_disp.numpy())
    ref = {
        "nb": lambda: stats.nbinom.logpmf(x.numpy(), disp, disp / (disp + mu)),
        "poisson": lambda: stats.poisson.logpmf(x.numpy(), mu),
        "normal": lambda: stats.norm.logpdf(x.numpy(), mu, disp),
    }[likelihood]().sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)


@pytest.mark.parametrize("likelihood", ["nb", "poisson", "normal"])
def test_seeded_draws_have_the_closed_form_moments(likelihood):
    mu = torch.tensor([0.5, 4.0, 30.0], dtype=torch.float64)
    log_disp = torch.log(torch.tensor([2.0, 5.0, 1.5], dtype=torch.float64))
    x = draw_counts(likelihood, mu, log_disp, torch.Generator().manual_seed(0), n_samples=40000)
    var = {"nb": mu + mu**2 / log_disp.exp(), "poisson": mu, "normal": log_disp.exp() ** 2}
    np.testing.assert_allclose(x.mean(0).numpy(), mu.numpy(), rtol=0.03)
    np.testing.assert_allclose(x.var(0).numpy(), var[likelihood].numpy(), rtol=0.06)
    dist = count_distribution(likelihood, mu, log_disp)
    np.testing.assert_allclose(dist.mean.numpy(), mu.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dist.variance.numpy(), var[likelihood].numpy(), rtol=1e-12)


@pytest.mark.parametrize("likelihood", ["poisson", "normal"])
def test_other_likelihoods_train_and_score(small, likelihood):
    model = fit_model("SAMS-VAE", "corr", small, steps=10, batch_size=64, n_latent=3, hidden=8,
                      likelihood=likelihood, val_frac=0.0, device="cpu")
    assert model.module.likelihood == likelihood and np.isfinite(model.history).all()
    assert np.isfinite(model.iwelbo(small[:20], n_particles=3)).all()
    ate = model.average_treatment_effect(n_particles=4)
    assert np.isfinite(ate.to_numpy()).all()
    assert model.posterior_predictive(small[:5]).shape == (5, 20)
    cpa = fit_model("CPA-VAE", "mf", small, steps=3, batch_size=64, n_latent=3, hidden=8,
                    likelihood=likelihood, val_frac=0.0, device="cpu")
    assert cpa.module.likelihood == likelihood
    with pytest.raises(ValueError, match="likelihood"):
        SAMSVAEModule(20, 6, likelihood="zinb")


def test_sample_counts_of_a_hand_set_decoder_has_the_nb_moments(small):
    """Decoder weights zeroed: rho = 1/G for every cell, so with a fixed library size L the
    counts are NB(mean L/G, theta) whatever the latent and the dosage."""
    model = SAMSVAE(small, n_latent=3, hidden=8, seed=0)
    with torch.no_grad():
        for param in model.module.decoder.parameters():
            param.zero_()
        model.module.log_theta.fill_(np.log(4.0))
    rows = [model.perturbation_names[0], model.perturbation_names[3]]
    counts = model.sample_counts(rows, n_cells=20000, library_size=200.0, seed=1)
    assert counts.shape == (2, 20000, 20)
    mu = 200.0 / 20
    np.testing.assert_allclose(counts.mean(1), mu, rtol=0.04)
    np.testing.assert_allclose(counts.var(1), mu + mu**2 / 4.0, rtol=0.1)
    np.testing.assert_array_equal(model.sample_counts(rows, 50, seed=2),
                                  model.sample_counts(rows, 50, seed=2))
    control = model.sample_counts(np.zeros((1, len(model.perturbation_names))), n_cells=5)
    assert control.shape == (1, 5, 20) and (control >= 0).all()


def test_mcc_of_a_permuted_sign_flipped_rescaled_copy_is_one():
    z = np.random.default_rng(0).standard_normal((300, 4))
    copy = z[:, [2, 0, 3, 1]] * np.array([-1.0, 3.0, -0.5, 2.0]) + 7.0
    out = mean_corr_coef(z, copy)
    assert out["mcc"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(out["columns"], [1, 3, 0, 2])

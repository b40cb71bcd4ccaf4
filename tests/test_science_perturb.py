"""The SAMS-VAE formulas against computations that do not use the code under test.

Every module here has its networks set by hand, so that the encoder, decoder and guides have
known closed forms: the encoder returns a constant location and scale, the decoder computes
``logits = A (z + B d) + c`` exactly (a leaky-ReLU pair ``leaky(h) - leaky(-h) = 1.01 h``), and
the guides' parameters are chosen numbers. The references are then scipy densities evaluated at
the sampled latents (ELBO terms, SAMS-VAE eqs. 1-5 and App. A.1), a log-mean-exp written out by
hand (IWELBO, eqs. 6-7), Gauss-Hermite quadrature of the treatment effect (sec. 3.2) and means
of hand-made cells (data DE, sec. 3.2).
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import special, stats

from liftkit.perturb import SAMSVAE, differential_expression, read_counts
from liftkit.perturb.evaluation import average_treatment_effect
from liftkit.perturb.modules import (
    ConditionalVAEModule,
    CPAVAEModule,
    Locals,
    PerturbModule,
    SAMSVAEModule,
    SVAEPlusModule,
)
from liftkit.perturb.objectives import iwelbo, minibatch_elbo

G, T, D = 3, 2, 2  # genes, perturbations, latent dimensions
X = torch.tensor([[12.0, 3.0, 5.0], [0.0, 7.0, 9.0], [4.0, 4.0, 1.0], [20.0, 1.0, 2.0]])
DOSE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
A = np.array([[1.0, -0.5], [-0.7, 0.3], [0.2, 0.9]])  # decoder: logits = A (z + B d) + c
C = np.array([0.1, -0.4, 0.3])
B = np.array([[0.8, -0.6], [0.4, 1.1]])  # conditional VAE's dosage effect, [D, T]
ENC_LOC, ENC_RAW = np.array([0.3, -0.2]), np.array([-0.5, 0.4])
EMB_LOC = np.array([[1.5, -1.0], [0.5, 2.0]])  # q(e_t) mean, or SVAE+'s shift e_c
EMB_RAW = np.array([[-1.0, -0.3], [0.2, -2.0]])
MASK_LOGITS = np.array([[4.0, 1.0], [-1.0, 4.0]])
LOG_THETA = np.array([1.5, 0.5, 2.5])
CLASSES = {"SAMS-VAE": SAMSVAEModule, "CPA-VAE": CPAVAEModule,
           "Conditional VAE": ConditionalVAEModule, "SVAE+": SVAEPlusModule}


def softplus(v):
    return np.log1p(np.exp(v))


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


@torch.no_grad()
def _hand_set(mod, a=A, c=C, b=B, enc_loc=ENC_LOC, enc_raw=ENC_RAW, log_theta=LOG_THETA,
              guides=True):
    """Constant encoder, linear decoder, chosen guides: every network output known by hand."""
    dz = mod.n_latent
    enc = mod.encoder.net
    enc.out.weight.zero_()
    enc.out.bias.copy_(_t(np.r_[enc_loc, enc_raw]))
    net = mod.decoder.net  # out(leaky(inp(z) + cond(d))), hidden = 2 D
    eye = np.eye(dz)
    net.inp.weight.copy_(_t(np.r_[eye, -eye]))
    net.inp.bias.zero_()
    net.out.weight.copy_(_t(np.c_[a, -a] / 1.01))
    net.out.bias.copy_(_t(c))
    if mod.decoder.cond is not None:
        mod.decoder.cond.weight.copy_(_t(np.r_[b, -b]))
    mod.log_theta.copy_(_t(log_theta))
    if not guides:
        return mod
    if hasattr(mod, "embedding"):
        mod.embedding.loc.copy_(_t(EMB_LOC))
        mod.embedding.scale_raw.copy_(_t(EMB_RAW))
    if hasattr(mod, "shift_loc"):
        mod.shift_loc.copy_(_t(EMB_LOC))
    if hasattr(mod, "mask"):
        mod.mask.guide.logits.copy_(_t(MASK_LOGITS))
    return mod


def _module(name, **kw):
    torch.manual_seed(0)
    extra = {"alpha": 0.2} if name == "SAMS-VAE" else {}
    mod = CLASSES[name](G, T, n_latent=D, hidden=2 * D, guide="mf", **extra, **kw)
    return _hand_set(mod).eval()


def _nb_loglik(x, logits):
    """sum_g log NB(x_g | l softmax(logits)_g, theta_g) with l = sum_g x_g (SAMS-VAE sec. 2.2)."""
    mu = x.sum(-1, keepdims=True) * special.softmax(logits, -1)
    th = np.exp(LOG_THETA)
    return stats.nbinom.logpmf(x, th, th / (th + mu)).sum(-1)


def _norm(v, loc, scale):
    return stats.norm.logpdf(v, loc, scale).sum(-1)


def _hand_terms(name, glob, z):
    """(global log ratio [P, T], local log ratio [P, B]) of SAMS-VAE eqs. 1-5 by hand."""
    x, d = X.numpy(), DOSE.numpy()
    p = z.shape[0]
    enc_scale = softplus(ENC_RAW) + 1e-4
    m = np.ones((p, T, D)) if glob.mask is None else glob.mask.numpy().round()
    q_mask = stats.bernoulli.logpmf(m, special.expit(MASK_LOGITS)).sum(-1)
    if name in ("SAMS-VAE", "CPA-VAE"):
        e = glob.emb.numpy()
        g = _norm(e, 0, 1) - _norm(e, EMB_LOC, softplus(EMB_RAW) + 1e-4)
        if name == "SAMS-VAE":
            g = g + stats.bernoulli.logpmf(m, 0.2).sum(-1) - q_mask
        shift = d @ (e * m)  # eq. 1: z^p = sum_t d_t (e_t * m_t), [P, B, D]
        zb = z - shift  # the basal state is what the encoder proposes and N(0, I) scores
        local = _norm(zb, 0, 1) - _norm(zb, ENC_LOC, enc_scale)
        logits = z @ A.T + C
    elif name == "SVAE+":
        s = m.sum(-1)  # collapsed Beta(1, 2)-Bernoulli prior of each mask row
        g = stats.betabinom.logpmf(s, D, 1.0, 2.0) - np.log(special.comb(D, s)) - q_mask
        shift = d @ (EMB_LOC * m)  # z ~ N(m_c * e_c, I), App. A.2.2
        local = _norm(z - shift, 0, 1) - _norm(z, ENC_LOC, enc_scale)
        logits = z @ A.T + C
    else:  # conditional VAE: z ~ N(0, I), decoder reads [z, d]
        g = np.zeros((p, T))
        local = _norm(z, 0, 1) - _norm(z, ENC_LOC, enc_scale)
        logits = (z + d @ B.T) @ A.T + C
    return g, local + _nb_loglik(x, logits)


@pytest.mark.parametrize("name", list(CLASSES))
def test_each_model_elbo_terms_by_hand(name):
    """Every model of the family: global and local log ratios, and the minibatch ELBO (App. A.1)
    with its n~_t / n_t weights, from scipy densities at the sampled latents."""
    mod = _module(name)
    with torch.no_grad():
        glob, loc = mod(X, DOSE, n_particles=3, generator=torch.Generator().manual_seed(3))
    g_ref, l_ref = _hand_terms(name, glob, loc.z.numpy())
    np.testing.assert_allclose(glob.log_ratio.numpy(), g_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(loc.log_ratio.numpy(), l_ref, rtol=1e-4, atol=1e-3)
    # the minibatch ELBO of the last three cells, perturbation totals of a 10x larger training set
    n_t = np.array([20.0, 10.0])
    batch = [1, 2, 3]
    w = DOSE.numpy()[batch].sum(0) / n_t
    ref = (g_ref @ w + l_ref[:, batch].sum(-1)).mean()
    got = minibatch_elbo(glob.log_ratio, loc.log_ratio[:, batch], DOSE[batch], _t(n_t))
    assert abs(float(got) - ref) < 1e-3 * max(1.0, abs(ref))


def test_perturbations_move_the_likelihood_of_every_shift_model():
    """A perturbed cell's latent must carry its shift: scoring the same cell as a control changes
    its log ratio by the hand-computed amount (no model may ignore d)."""
    for name in ("SAMS-VAE", "CPA-VAE", "SVAE+", "Conditional VAE"):
        mod = _module(name)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(11)
            glob = mod.sample_globals(2, generator=gen)
            treated = mod.local_terms(X[3:], DOSE[3:], glob, 2, generator=torch.Generator().manual_seed(1))
            control = mod.local_terms(X[3:], DOSE[:1], glob, 2, generator=torch.Generator().manual_seed(1))
        gap = (treated.log_ratio - control.log_ratio).abs().max()
        assert gap > 0.1, f"{name}: the dosage does not change the cell's terms ({float(gap):.3g})"


class _FixedParticles(PerturbModule):
    """A module whose particles have chosen log ratios (one cell), handed out in draw order."""

    def __init__(self, log_ratios):
        super().__init__(n_genes=G, n_perts=1, n_latent=1, hidden=2)
        self.values = torch.tensor(log_ratios)
        self.drawn = 0

    def local_terms(self, x, d, glob, n_particles, const=None, generator=None):
        out = self.values[self.drawn : self.drawn + n_particles][:, None]
        self.drawn += n_particles
        return Locals(out, out, torch.zeros(n_particles, 1, 1))


@pytest.mark.parametrize("max_elements", [2**24, G])  # all particles at once, or one by one
def test_iwelbo_one_cell_two_particles_by_hand(max_elements):
    """Eqs. 6-7 with K = 2: log((exp(w_1) + exp(w_2)) / 2) of the particles' log weights."""
    w1, w2 = -2.0, -5.5
    ref = math.log((math.exp(w1) + math.exp(w2)) / 2)
    mod = _FixedParticles([w1, w2])
    got = iwelbo(mod, X[:1], torch.zeros(1, 1), n_particles=2, max_elements=max_elements)
    assert got.shape == (1,) and abs(float(got[0]) - ref) < 1e-6
    assert mod.drawn == 2


def test_iwelbo_of_a_model_whose_guide_is_its_prior():
    """With q(z | x) = p(z) = N(0, I) and a decoder that ignores z, every importance weight is
    p(x | rho): the IWELBO is sum_g log NB(x_g | l softmax(c)_g, theta_g) for every K."""
    torch.manual_seed(0)
    mod = PerturbModule(G, T, n_latent=D, hidden=2 * D)
    unit = math.log(math.expm1(1 - 1e-4))  # softplus(raw) + 1e-4 = 1
    _hand_set(mod, a=np.zeros((G, D)), enc_loc=np.zeros(D), enc_raw=np.full(D, unit))
    ref = _nb_loglik(X.numpy(), C)
    for k in (1, 2, 7):
        got = iwelbo(mod, X, DOSE, n_particles=k, seed=k)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def _ate_by_quadrature(shifts, a, c, target_sum=1e4, nodes=80):
    """E_u[y(u + s)] - E_u[y(u)], y(z) = log1p(target_sum softmax(a z + c)), u ~ N(0, 1)."""
    u, wts = np.polynomial.hermite_e.hermegauss(nodes)
    wts = wts / wts.sum()

    def mean_y(s):
        rho = special.softmax(np.outer(u + s, a) + c, -1)
        return wts @ np.log1p(target_sum * rho)

    return np.array([mean_y(s) - mean_y(0.0) for s in shifts])


@pytest.mark.parametrize("name", list(CLASSES))
def test_ate_against_quadrature_with_a_hand_set_decoder(name):
    """SAMS-VAE sec. 3.2: the model ATE against control, for a one-dimensional latent whose shift
    per treatment is known, with large libraries and dispersion (y = log1p(1e4 rho) exactly)."""
    a1, c1 = np.array([[2.0], [-1.0], [0.0]]), np.array([0.2, -0.3, 0.1])
    torch.manual_seed(0)
    extra = {"alpha": 0.2} if name == "SAMS-VAE" else {}
    mod = CLASSES[name](G, T, n_latent=1, hidden=2, guide="mf", **extra)
    b1 = np.array([[1.2, -0.8]])
    _hand_set(mod, a=a1, c=c1, b=b1, enc_loc=[0.0], enc_raw=[0.0], log_theta=np.full(G, 18.0),
              guides=False)
    with torch.no_grad():
        shift_of_t = np.array([1.2, -0.8])
        if hasattr(mod, "embedding"):
            mod.embedding.loc.copy_(_t(shift_of_t[:, None]))
            mod.embedding.scale_raw.fill_(-30.0)  # q(e_t) a point mass at its mean (1e-4)
        if hasattr(mod, "shift_loc"):
            mod.shift_loc.copy_(_t(shift_of_t[:, None]))
        if hasattr(mod, "mask"):
            mod.mask.guide.logits.fill_(30.0)  # every mask entry on
    dose = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    if name == "SVAE+":
        dose = dose[:2]  # one condition per cell
    shifts = dose.numpy() @ shift_of_t
    ate = average_treatment_effect(mod, dose, torch.tensor([1e9]), n_particles=40000, seed=1)
    ref = _ate_by_quadrature(shifts, a1[:, 0], c1)
    np.testing.assert_allclose(ate, ref, atol=0.03)
    assert np.abs(ref).max() > 0.5  # the effects are large next to the tolerance


def _cells(counts, dosage, sparse=False):
    x = np.asarray(counts, dtype=np.float32)
    a = ad.AnnData(np.zeros_like(x), var=pd.DataFrame(index=["g0", "g1"]))
    a.layers["counts"] = sp.csr_matrix(x) if sparse else x
    a.obsm["dosage"] = pd.DataFrame(np.asarray(dosage, dtype=np.float32), columns=["P1", "P2"],
                                    index=a.obs_names)
    return a


# Every cell has 10,000 counts, so its log-normalised value is log1p(count).
DE_COUNTS = [[5000, 5000], [7000, 3000], [9000, 1000], [8000, 2000], [1000, 9000], [2000, 8000]]
DE_DOSE = [[0, 0], [0, 0], [1, 0], [1, 0], [0, 1], [1, 1]]


@pytest.mark.parametrize("sparse", [False, True])
def test_data_de_against_control_cells_by_hand(sparse):
    """DE(d*) = mean of single-guide cells minus mean of control cells (sec. 3.2); the double
    guide cell belongs to neither group."""
    de = differential_expression(_cells(DE_COUNTS, DE_DOSE, sparse))
    control = (np.log1p([5000, 5000]) + np.log1p([7000, 3000])) / 2
    p1 = (np.log1p([9000, 1000]) + np.log1p([8000, 2000])) / 2 - control
    p2 = np.log1p([1000, 9000]) - control
    np.testing.assert_allclose(de.loc["P1"].to_numpy(), p1, rtol=1e-5)
    np.testing.assert_allclose(de.loc["P2"].to_numpy(), p2, rtol=1e-5)
    assert list(de.columns) == ["g0", "g1"]
    assert list(differential_expression(_cells(DE_COUNTS, DE_DOSE), min_cells=2).index) == ["P1"]


def test_sparse_counts_are_read_and_fitted_like_dense_ones():
    dense, sparse = _cells(DE_COUNTS, DE_DOSE), _cells(DE_COUNTS, DE_DOSE, sparse=True)
    np.testing.assert_array_equal(read_counts(sparse), read_counts(dense))
    scores = [SAMSVAE(a, n_latent=2, hidden=4, seed=0).iwelbo(n_particles=3) for a in (dense, sparse)]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_evaluation_rejects_empty_inputs():
    mod = _module("CPA-VAE")
    with pytest.raises(ValueError, match="n_particles"):
        iwelbo(mod, X, DOSE, n_particles=0)
    for bad in (dict(n_particles=0), dict(n_samples=0)):
        with pytest.raises(ValueError, match="n_particles and n_samples"):
            average_treatment_effect(mod, DOSE[1:], torch.tensor([100.0]), **bad)
    no_control = [[1, 0], [1, 0], [0, 1], [1, 1]]
    with pytest.raises(ValueError, match="no control cells"):
        differential_expression(_cells(DE_COUNTS[2:], no_control))


def test_log_normalise_and_de_with_unequal_library_sizes():
    """y = log1p(target_sum x / l) per cell, for cells of different sizes, other keys and totals."""
    from liftkit.perturb.evaluation import log_normalise

    x = np.array([[1.0, 3.0], [10.0, 30.0], [2.0, 0.0]])
    share = x / x.sum(1, keepdims=True)
    np.testing.assert_allclose(log_normalise(x.copy()), np.log1p(1e4 * share), rtol=1e-7)
    np.testing.assert_allclose(log_normalise(x.copy(), 100.0), np.log1p(100 * share), rtol=1e-7)
    counts = [[100, 300], [50, 950], [40, 10], [900, 100], [30, 70]]
    a = _cells(counts, [[0, 0], [0, 0], [1, 0], [1, 0], [0, 1]])
    a.X = a.layers.pop("counts")  # counts in X, dosages under another key
    a.obsm["guides"] = a.obsm.pop("dosage")
    de = differential_expression(a, layer=None, dosage_key="guides", target_sum=100.0)
    y = np.log1p(100 * np.array(counts) / np.sum(counts, 1, keepdims=True))
    np.testing.assert_allclose(de.loc["P1"], y[2:4].mean(0) - y[:2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(de.loc["P2"], y[4] - y[:2].mean(0), rtol=1e-6)


def test_minibatch_elbo_weights_unseen_and_fractional_perturbations():
    """App. A.1 weights n~_t / n_t: 0 for a perturbation with no training cells, and exact for
    fractional dosage totals."""
    glob = torch.tensor([[1.0, 2.0, 4.0]])
    local = torch.tensor([[0.5, -1.0]])
    d = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 1.0]])
    n_t = torch.tensor([0.0, 0.25, 8.0])
    ref = 0.0 * 1.0 + (0.5 / 0.25) * 2.0 + (1.0 / 8.0) * 4.0 + (0.5 - 1.0)
    assert abs(float(minibatch_elbo(glob, local, d, n_t)) - ref) < 1e-6


@pytest.mark.parametrize("to", [np.asarray, sp.csr_matrix])
def test_log_normalise_leaves_its_input_alone(to):
    from liftkit.perturb.evaluation import log_normalise

    x = to(np.array([[1.0, 3.0], [2.0, 0.0]]))
    log_normalise(x)
    dense = x.toarray() if sp.issparse(x) else x
    np.testing.assert_array_equal(dense, [[1.0, 3.0], [2.0, 0.0]])

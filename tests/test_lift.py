"""Tests of liftkit.lift objectives, training loop and experiment (LIFT eq. 6, 36, App. C-D),
liftkit.lift.nets and metrics.pr_auc."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift.experiment import evaluate, make_test_set, moi_experiment, predict
from liftkit.lift.library import EmpiricalLibrary, SiteIndependentLibrary
from liftkit.lift.nets import SeqCNN
from liftkit.lift.objectives import (
    Objective,
    StepLoss,
    leavs_log_p0,
    pooled_mean,
    pooled_mean_loop,
    single_leavs_log_p0,
)
from liftkit.lift.oracle import Oracle, pattern_matrix
from liftkit.lift.screen import simulate_screen
from liftkit.lift.train import fit_conventional, fit_lift, train
from liftkit.metrics import pr_auc
from liftkit.stats import nb_log_cdf, nb_log_prob


@pytest.fixture(scope="module")
def site_lib():
    return SiteIndependentLibrary.from_olga(20000)


def test_nb_log_prob_matches_scipy():
    y = torch.tensor([0.0, 1, 3, 10, 57])
    mean = torch.tensor([0.1, 2.0, 3.5, 20.0, 40.0], dtype=torch.float64)
    phi = 2.28
    ours = nb_log_prob(y.double(), mean, phi).numpy()
    ref = stats.nbinom.logpmf(y.numpy(), phi, phi / (phi + mean.numpy()))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    cdf = nb_log_cdf(3, mean, phi).numpy()
    np.testing.assert_allclose(cdf, stats.nbinom.logcdf(3, phi, phi / (phi + mean.numpy())),
                               rtol=1e-9)


def test_pooled_forward_equals_per_cell_loop(site_lib):
    scr = simulate_screen(site_lib, 400, 4.0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = SeqCNN(max_len=site_lib.max_len, channels=8, hidden=8).double()
    cells = torch.randperm(scr.n_sorted)[:50]
    ref = pooled_mean_loop(net, scr, cells)
    for dedupe in (True, False):
        out, _ = pooled_mean(net, scr, cells, dedupe=dedupe)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # and with a shared extra evaluation (the LeaVS Monte Carlo samples)
    extra = site_lib.sample(7)
    out, f_extra = pooled_mean(net, scr, cells, extra_tokens=extra)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f_extra, net(extra), rtol=1e-10, atol=1e-12)


def test_net_is_nonnegative_and_padding_invariant(site_lib):
    net = SeqCNN(max_len=32)
    x = site_lib.sample(64)
    f = net(x)
    assert f.shape == (64,) and (f >= 0).all()
    width = int((x != 20).sum(1).max())
    torch.testing.assert_close(net(x[:, :width]), f)


def test_leavs_mc_matches_exact_expression():
    # discrete library: E_p is an exact finite sum
    lib = EmpiricalLibrary(["CARPAW", "CARAAW", "CAKAAW", "CARGW"], weights=[1, 3, 3, 3])
    fvals = torch.tensor([4.0, 0.1, 0.3, 0.05], dtype=torch.float64)
    phi, moi = 2.28, 3.0
    exact = -moi * float((lib.probs * (1 - (1 + fvals / phi) ** (-phi))).sum())
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(lib.probs, 20000, replacement=True, generator=g)
    f_mc = fvals[idx]
    # (a) literal eq. 36: simulated cells; standard error by the delta method
    cells = leavs_log_p0(f_mc, moi, phi, estimator="cells", n_cells_mc=20000, generator=g)
    p0 = math.exp(exact)
    # per-cell P(y=0 | cell) has second moment E[g^N] with g -> g^2: exp(-moi E[1 - g^2])
    g2 = float((lib.probs * (1 + fvals / phi) ** (-2 * phi)).sum())
    var_cell = math.exp(-moi * (1 - g2)) - p0**2
    se = math.sqrt(var_cell / 20000) / p0
    assert abs(float(cells) - exact) < 5 * se
    # (b) Poisson-integrated estimator, same target
    pgf = leavs_log_p0(f_mc, moi, phi, estimator="pgf")
    gx = (1 + fvals / phi) ** (-phi)
    se_pgf = moi * math.sqrt(float((lib.probs * gx**2).sum() - (lib.probs * gx).sum() ** 2) / 20000)
    assert abs(float(pgf) - exact) < 5 * se_pgf
    # (c) a threshold > 0 uses cell-level NB: P(y <= 5) > P(y = 0)
    assert float(leavs_log_p0(f_mc, moi, phi, threshold=5, generator=g)) > exact
    # single-sequence term: log E_p[(1 + f/phi)^-phi]
    single = single_leavs_log_p0(fvals, phi)
    assert abs(float(single) - math.log(float(gx.mean()))) < 1e-10
    with pytest.raises(ValueError):
        leavs_log_p0(f_mc, 0.0, phi)


def test_pr_auc():
    assert pr_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0
    with pytest.raises(ValueError, match="positive"):
        pr_auc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        pr_auc([0, 1], [0.1])


def test_bad_input(site_lib):
    scr = simulate_screen(site_lib, 200, 1.0, oracle=Oracle(s0=0.001, mult=1.0),
                          generator=torch.Generator().manual_seed(0))
    empty = scr.subset(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="sequenced cells"):
        fit_lift(empty, site_lib, steps=1)
    with pytest.raises(ValueError, match="sequenced cells"):
        fit_conventional(empty, site_lib, steps=1)
    ok = simulate_screen(site_lib, 200, 3.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="moi"):
        fit_lift(ok, site_lib, steps=1, moi=-1.0)


@pytest.fixture
def one_thread():
    """Small batches train fastest on one thread on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_small_lift_training_learns_motifs(site_lib, one_thread):
    """LIFT at MOI 5 beats chance PR AUC clearly and ranks patterned sequences above others."""
    g = torch.Generator().manual_seed(0)
    scr = simulate_screen(site_lib, 1500, 5.0, generator=g)
    res = fit_lift(scr, site_lib, steps=150, batch_size=32, lr=1e-2, eval_every=25,
                   net_kw=dict(channels=16, hidden=16), show_progress=False, seed=0)
    assert min(res.history["val"]) < res.history["val"][0]  # held-out likelihood improved
    assert res.phi > 0
    test = make_test_set(site_lib, 20000, generator=g)
    chance = float(test.label.float().mean())
    auc = evaluate(res, test)
    # chance PR AUC is the positive rate (~0.002); demand a 20-fold improvement
    assert auc > 20 * chance
    # motif effects: f on sequences with >= 2 patterns >> f on sequences with none
    k = pattern_matrix(test.tokens).sum(1)
    f = predict(res, test.tokens)
    assert f[k >= 2].median() > 5 * f[k == 0].median()
    assert f[k == 1].median() > f[k == 0].median()


def test_experiment_machinery_with_other_motifs(site_lib):
    """The motif set is a parameter of the whole experiment (oracle, screen, test labels)."""
    patterns = [(4, ("G",)), (7, ("Y", "W"))]
    out = moi_experiment(site_lib, mois=[2.0], n_cells=150, replicates=1,
                         methods=("LIFT", "conventional", "LIFT (no LeaVS)"),
                         oracle=Oracle(patterns=patterns, s0=0.5), n_test=2000,
                         fit_kw=dict(steps=3, batch_size=16), seed=1, device="cpu")
    assert list(out.table.method) == ["LIFT", "conventional", "LIFT (no LeaVS)"]
    assert out.table.pr_auc.between(0, 1).all()
    k = pattern_matrix(out.test.tokens, patterns).sum(1)
    # labels follow the new motifs: hits concentrate on sequences carrying them
    assert out.test.label[k >= 1].float().mean() > 5 * out.test.label[k == 0].float().mean()
    assert set(out.curves) == {"LIFT", "conventional", "LIFT (no LeaVS)"}
    with pytest.raises(ValueError, match="unknown methods"):
        moi_experiment(site_lib, methods=("nope",))


class _ScriptedObjective(Objective):
    """Pulls a scalar weight towards 3; its validation values follow a script, so the best
    step is known in advance."""

    name = "scripted"
    n_units = 4
    batch_units = 2

    def __init__(self, script):
        super().__init__(torch.nn.Linear(1, 1, bias=False), generator=torch.Generator())
        self.script = list(script)
        self.weights_at_eval = []

    def loss(self, units):
        return StepLoss(((self.net.weight - 3.0) ** 2).sum(), len(units), len(units))

    def validation(self):
        self.weights_at_eval.append(self.net.weight.detach().clone())
        return self.script[len(self.weights_at_eval) - 1]


def test_loop_restores_the_best_weights():
    obj = _ScriptedObjective([5.0, 2.0, 1.0, 4.0, 6.0, 7.0, 8.0])
    res = train(obj, steps=100, lr=0.1, eval_every=2, patience=3, show_progress=False)
    # evaluations at steps 2, 4, 6 (best), 8, 10, 12: three without improvement stop the fit
    assert res.history["step"] == [2, 4, 6, 8, 10, 12]
    assert res.best_step == 6 and res.method == "scripted"
    assert len(obj.weights_at_eval) == 6
    assert not torch.equal(obj.weights_at_eval[-1], obj.weights_at_eval[2])  # it moved on
    torch.testing.assert_close(res.net.weight, obj.weights_at_eval[2], rtol=0, atol=0)
    assert res.sequences_seen == res.cells_seen == 12 * 2


def test_loop_without_validation_keeps_the_last_weights():
    obj = _ScriptedObjective([float("nan")] * 3)
    res = train(obj, steps=5, lr=0.1, eval_every=2, patience=1, show_progress=False)
    assert res.history["step"] == [2, 4, 5] and res.best_step == 5
    torch.testing.assert_close(res.net.weight, obj.weights_at_eval[-1], rtol=0, atol=0)


class _FalsyNet(SeqCNN):
    """A module that is falsy (as containers, or wrappers defining ``__len__``, can be)."""

    def __len__(self):
        return 0


def test_fits_use_a_given_falsy_module(site_lib):
    scr = simulate_screen(site_lib, 200, 3.0, generator=torch.Generator().manual_seed(0))
    for fit in (fit_lift, fit_conventional):
        net = _FalsyNet(max_len=site_lib.max_len, channels=4, hidden=4)
        assert not net
        res = fit(scr, site_lib, net=net, steps=2, batch_size=8, n_mc=8, mc_pool=64,
                  show_progress=False, device="cpu")
        assert res.net is net  # trained in place, not replaced by a default SeqCNN

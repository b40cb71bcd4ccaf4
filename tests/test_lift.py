"""Tests of liftkit.lift objectives, training loop and experiment (LIFT eq. 6, 36, App. C-D),
liftkit.lift.nets and metrics.pr_auc."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift.experiment import (
    ALT_PATTERNS,
    TestSet,
    constants_grid,
    evaluate,
    make_test_set,
    moi_experiment,
    oracle_ceiling,
    predict,
    summarise_pr_auc,
)
from liftkit.lift.library import EmpiricalLibrary, SiteIndependentLibrary
from liftkit.lift.nets import SeqCNN
from liftkit.lift.objectives import (
    Objective,
    StepLoss,
    leavs_log_p0,
    pooled_mean,
    pooled_mean_loop,
    single_leavs_log_p0,
    validation_size,
)
from liftkit.lift.oracle import Oracle, pattern_matrix
from liftkit.lift.screen import simulate_screen
from liftkit.lift.train import budget_steps, default_eval_every, fit_conventional, fit_lift, train
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


def test_budget_in_epochs_and_validation_floor():
    # 1000 units in batches of 128: 8 steps per epoch (the last batch is refilled)
    assert budget_steps(1000, 128, epochs=10, steps=None) == 80
    assert budget_steps(1000, 128, epochs=10, steps=7) == 7  # an explicit step budget wins
    assert budget_steps(5, 128, epochs=3, steps=None) == 3
    assert default_eval_every(1000, 128) == 10 and default_eval_every(50_000, 128) == 100
    assert default_eval_every(3000, 128) == 24
    with pytest.raises(ValueError, match="epochs"):
        budget_steps(10, 2, epochs=0, steps=None)
    # 10% of the sorted cells, but at least val_min, and never more than half
    assert validation_size(5000, 0.1, 100) == 500
    assert validation_size(400, 0.1, 100) == 100
    assert validation_size(40, 0.1, 100) == 20
    assert validation_size(3, 0.1, 100) == 1
    assert validation_size(400, 0.0, 100) == 0


def test_loop_records_whether_the_budget_bound_it():
    stops = train(_ScriptedObjective([5.0, 2.0, 1.0, 4.0, 6.0, 7.0, 8.0]), steps=100, lr=0.1,
                  eval_every=2, patience=3, show_progress=False)
    assert not stops.bound and stops.steps_run == 12 and stops.budget_steps == 100
    assert stops.epochs_run == pytest.approx(12 * 2 / 4)
    bound = train(_ScriptedObjective([5.0, 4.0, 3.0]), steps=6, lr=0.1, eval_every=2,
                  patience=3, show_progress=False)
    assert bound.bound and bound.best_step == 6 and bound.steps_run == 6
    assert bound.cpu_seconds >= 0


def _test_set(strength, label):
    strength, label = torch.as_tensor(strength).float(), torch.as_tensor(label)
    return TestSet(tokens=torch.zeros(len(label), 1, dtype=torch.long), y=label.float(),
                   strength=strength, label=label)


def test_oracle_ceiling():
    # strength separates the labels: the ceiling is 1
    assert oracle_ceiling(_test_set([1, 1, 5, 5], [False, False, True, True])) == 1.0
    # one tied block: random orderings, whose mean AP tends to the positive rate (0.1)
    rng = np.random.default_rng(0)
    label = rng.random(20000) < 0.1
    assert oracle_ceiling(_test_set(np.ones(20000), label)) == pytest.approx(label.mean(), abs=0.01)
    # two blocks: top block 50% positive (100 items), bottom block 1% positive (1000 items);
    # an independent Monte Carlo of AP under random orderings within blocks
    label = np.r_[np.arange(100) < 50, np.arange(1000) < 10]
    strength = np.r_[np.full(100, 2.0), np.ones(1000)]
    aps = []
    for _ in range(400):
        order = np.lexsort((rng.random(1100), -strength))
        hits = label[order]
        prec = np.cumsum(hits) / np.arange(1, 1101)
        aps.append(prec[hits].mean())
    got = oracle_ceiling(_test_set(strength, label), tie_breaks=200)
    assert got == pytest.approx(np.mean(aps), abs=0.01)
    assert np.isnan(oracle_ceiling(_test_set([1, 2], [False, False])))


def test_leavs_cell_noise_matches_the_gamma_integral():
    """noise='cell': P(y=0) = E_G exp(-moi E_p[1 - exp(-G f)]), G ~ Gamma(phi, 1/phi), a 1-D
    integral computed with scipy (LIFT eq. 36 with a cell-level NB)."""
    from scipy import integrate

    f = torch.tensor([0.05, 0.2, 1.0, 3.0], dtype=torch.float64)
    moi, phi = 2.0, 2.28

    def integrand(g):
        return stats.gamma.pdf(g, phi, scale=1 / phi) * math.exp(
            -moi * float((1 - torch.exp(-g * f)).mean()))

    exact = math.log(integrate.quad(integrand, 0, np.inf)[0])
    gen = torch.Generator().manual_seed(0)
    est = float(leavs_log_p0(f, moi, phi, estimator="cells", n_cells_mc=400_000,
                             generator=gen, noise="cell"))
    assert est == pytest.approx(exact, abs=0.005)
    seq = float(leavs_log_p0(f, moi, phi, noise="sequence"))
    assert abs(seq - exact) > 0.02  # the two noise models differ measurably
    with pytest.raises(ValueError, match="noise"):
        leavs_log_p0(f, moi, phi, noise="poisson")


def test_constants_grid_reads_the_lost_constants(site_lib):
    grid = constants_grid(site_lib, s0s=(0.1, 3.0), compounds=(True, False),
                          sort_thresholds=(0.0, 20.0), label_thresholds=(10.0,),
                          n_cells=2000, n_test=20000)
    assert len(grid) == 2 * 2 * 2
    g = grid.set_index(["s0", "compound", "sort_threshold"])
    # "any pattern" with s0 = 0.1 caps the mean at 1: y > 10 is (almost) never reached
    assert g.loc[(0.1, False, 0.0), "chance"] < 1e-3
    # a higher sorting threshold sorts fewer cells
    assert g.loc[(3.0, True, 20.0), "sorted @ MOI 10"] < g.loc[(3.0, True, 0.0), "sorted @ MOI 10"]
    assert grid.ceiling.dropna().between(0, 1).all()


@pytest.mark.slow
def test_figure2_claims_hold_for_another_motif_set(site_lib, one_thread):
    """Converged fits at 6,000 cells, with the second motif set: LIFT's replicate range at MOI 10
    lies above its range at MOI 0.3, and LIFT beats conventional training at MOI 10 by more
    than the replicate spread (the chapter's claims, not its motifs)."""
    out = moi_experiment(site_lib, mois=[0.3, 10.0], n_cells=6000, replicates=2,
                         oracle=Oracle(patterns=ALT_PATTERNS), n_test=50000,
                         fit_kw=dict(epochs=300, batch_size=256, lr=1e-2, n_mc=128, patience=5,
                                     net_kw=dict(channels=16, hidden=16)),
                         seed=3, device="cpu")
    s = summarise_pr_auc(out.table, out.ceiling).set_index(["method", "moi"])
    assert not out.table.bound.any()
    assert s.loc[("LIFT", 10.0), "min"] > s.loc[("LIFT", 0.3), "max"]
    spread = max(s.loc[("LIFT", 10.0), "sd"], s.loc[("conventional", 10.0), "sd"])
    assert s.loc[("LIFT", 10.0), "mean"] - s.loc[("conventional", 10.0), "mean"] > spread
    assert s.loc[("LIFT", 10.0), "mean"] > 20 * out.chance

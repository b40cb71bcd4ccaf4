"""The LIFT formulas against computations that do not use the code under test.

A tiny screen is written out by hand (four sorted cells, six unsorted) and scored by a network
whose value on a sequence is a chosen number per first letter, so that every term of the
objective (pooled NB of eq. 6, LeaVS of eq. 36, L1 of eq. 7, the minibatch scaling) is a sum that
scipy and ``math`` evaluate directly. The site-independent library is checked against letter and
length frequencies counted with ``collections.Counter``; the training loop against the best
validation value it recorded; and two short trainings against chance and against each other.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift.experiment import evaluate, make_test_set, predict
from liftkit.lift.library import ALPHABET, PAD, EmpiricalLibrary, SiteIndependentLibrary, encode
from liftkit.lift.nets import SeqCNN
from liftkit.lift.objectives import (
    ConventionalObjective,
    LiftObjective,
    _check_screen,
    _device_of,
    _split_cells,
    leavs_log_p0,
    pooled_mean,
    trim,
    validation_size,
)
from liftkit.lift.screen import Screen, simulate_screen
from liftkit.lift.train import fit_conventional, fit_lift, train

# f by first letter: the screen's sequences start with C, W or K, the library's with D.
F_OF = {"C": 0.8, "W": 2.5, "K": 0.3, "D": 0.4}
SEQS = ["CAR", "WAR", "KAR"]
CELLS = [[0, 1], [2], [0, 0, 2], [1, 2]]  # sequences (indices into SEQS) of each sorted cell
Y = [4.0, 1.0, 2.0, 6.0]
N0, MOI, PHI, L1 = 6, 1.5, 2.0, 0.05


class FirstLetter(torch.nn.Module):
    """f(x) = a chosen value per first letter (a learnable table)."""

    def __init__(self):
        super().__init__()
        table = torch.zeros(PAD + 1)
        for letter, value in F_OF.items():
            table[ALPHABET.index(letter)] = value
        self.table = torch.nn.Parameter(table)

    def forward(self, tokens):
        return self.table[tokens[:, 0]]


def _screen_of(cells, y=None, n0=N0, threshold=0.0):
    """A screen of the given sorted cells (sequence indices into SEQS); y = 1 each unless given."""
    ptr = np.cumsum([0] + [len(c) for c in cells])
    return Screen(tokens=encode(SEQS), cell_ptr=torch.as_tensor(ptr),
                  seq_idx=torch.tensor([s for c in cells for s in c]),
                  y=torch.ones(len(cells)) if y is None else torch.tensor(y), n0=n0,
                  n_cells=n0 + len(cells), moi=MOI, threshold=threshold)


def _screen(threshold=0.0):
    """The hand-written screen: CELLS with readouts Y."""
    return _screen_of(CELLS, Y, threshold=threshold)


LIBRARY = EmpiricalLibrary(["DAA", "DCW", "DW"])  # f = F_OF["D"] on every library sample


def _objective(kind, threshold=0.0, **kw):
    args = dict(generator=torch.Generator().manual_seed(0), batch_size=2, n_mc=16, mc_pool=64,
                phi_init=PHI, val_frac=0.0)
    return kind(_screen(threshold), LIBRARY, FirstLetter(), **{**args, **kw})


def _nb(y, mean):
    """log NB(y | mean, phi) with variance mean + mean^2 / phi (scipy)."""
    return stats.nbinom.logpmf(y, PHI, PHI / (PHI + mean))


def _cell_mean(i):
    return sum(F_OF[SEQS[s][0]] for s in CELLS[i])


V = F_OF["D"]
LEAVS_POOLED = -MOI * (1 - (1 + V / PHI) ** -PHI)  # eq. 36 with per-sequence NB, closed form
LEAVS_SINGLE = -PHI * math.log1p(V / PHI)  # log P(y = 0 | one sequence of activity V)


@pytest.mark.parametrize("leavs, l1", [(True, L1), (True, 0.0), (False, L1), (False, 0.0)])
def test_lift_objective_is_the_hand_sum(leavs, l1):
    """-(n/B sum_batch log NB(y_i | sum_j f(x_ij)) + N0 log P(y=0) - gamma ||f||_1) / (n + N0)."""
    obj = _objective(LiftObjective, leavs=leavs, l1=l1)
    n, n_cells = len(Y), N0 + len(Y)
    prior = (N0 * LEAVS_POOLED if leavs else 0.0) - l1 * n_cells * V
    full = sum(_nb(Y[i], _cell_mean(i)) for i in range(n))
    out = obj.loss(torch.arange(n))
    assert abs(float(out.value.detach()) - (-(full + prior) / (n + N0))) < 1e-5
    assert (out.sequences, out.cells) == (sum(map(len, CELLS)), n)
    # a minibatch of two cells is scaled by n / B = 2 (an unbiased estimate of the full sum)
    units = torch.tensor([1, 3])
    cells = obj.train_cells[units].tolist()
    part = sum(_nb(Y[i], _cell_mean(i)) for i in cells) * n / 2
    assert abs(float(obj.loss(units).value.detach()) - (-(part + prior) / (n + N0))) < 1e-5


def test_dropping_leavs_changes_the_lift_objective_by_its_term():
    with_leavs = _objective(LiftObjective, leavs=True).loss(torch.arange(4)).value
    without = _objective(LiftObjective, leavs=False).loss(torch.arange(4)).value
    gap = float((with_leavs - without).detach())
    assert abs(gap - (-N0 * LEAVS_POOLED / (len(Y) + N0))) < 1e-6 and gap > 0.1


@pytest.mark.parametrize("leavs, l1, dedupe, threshold", [
    (True, L1, True, 0.0), (True, L1, False, 0.0), (False, 0.0, True, 0.0),
    (False, 0.0, False, 0.0), (True, 0.0, True, 1.0)])
def test_conventional_objective_is_the_hand_sum_over_pairs(leavs, l1, dedupe, threshold):
    """Pairs (x_ij, y_i) with y_i ~ NB(f(x_ij)), the single-sequence LeaVS term
    log P(y <= tau | NB(V, phi)) (scipy's CDF) and L1; with or without deduplicated sequences,
    and with no Monte Carlo batch at all when neither LeaVS nor L1 needs one."""
    obj = _objective(ConventionalObjective, threshold=threshold, leavs=leavs, l1=l1,
                     dedupe=dedupe)
    pairs = [(s, Y[i]) for i, c in enumerate(CELLS) for s in c]
    full = sum(_nb(y, F_OF[SEQS[s][0]]) for s, y in pairs)
    single = stats.nbinom.logcdf(threshold, PHI, PHI / (PHI + V))
    prior = (N0 * single if leavs else 0.0) - l1 * (N0 + len(Y)) * V
    out = obj.loss(torch.arange(len(pairs)))
    assert abs(float(out.value.detach()) - (-(full + prior) / (len(pairs) + N0))) < 1e-5
    assert (out.sequences, out.cells) == (len(pairs), 0)  # units are pairs, not pooled cells
    assert obj.n_units == len(pairs) and obj.batch_units == 4  # 2 cells x 2 sequences per cell
    if threshold == 0.0:
        assert abs(single - LEAVS_SINGLE) < 1e-12


def test_site_library_fit_counts_the_data():
    """Length and per-position letter frequencies equal the data's own (smoothing 0), and the
    sampled sequences follow the data's length distribution."""
    seqs = ["CAR", "CAK", "CW", "CARW", "CAR", "DW", "CAKW", "CTRDW"]
    lib = SiteIndependentLibrary.fit(seqs, max_len=6, smoothing=0.0)
    lengths = Counter(len(s) for s in seqs)
    for n in range(7):
        assert abs(float(lib.length_probs[n]) - lengths[n] / len(seqs)) < 1e-12
    for n, count in lengths.items():
        for t in range(n):
            letters = Counter(s[t] for s in seqs if len(s) == n)
            for a in ALPHABET:
                assert abs(float(lib.site_probs[n, t, ALPHABET.index(a)]) - letters[a] / count) < 1e-12
    # log p(CAR) = log P(L = 3) + log P(C | 3, 0) + log P(A | 3, 1) + log P(R | 3, 2)
    ref = math.log(3 / 8) + math.log(3 / 3) + math.log(3 / 3) + math.log(2 / 3)
    assert abs(float(lib.log_prob(lib.encode(["CAR"]))) - ref) < 1e-5
    # the default smoothing moves letters only, never lengths
    smooth = SiteIndependentLibrary.fit(seqs, max_len=6)
    x = smooth.sample(20000, torch.Generator().manual_seed(0))
    freq = torch.bincount((x != PAD).sum(1), minlength=7).double() / len(x)
    for n in range(7):
        p = lengths[n] / len(seqs)
        assert abs(float(freq[n]) - p) <= 5 * math.sqrt(p * (1 - p) / len(x)) + 1e-12


@pytest.fixture(scope="module")
def site_lib():
    return SiteIndependentLibrary.from_olga(20000)


def _best_val_objective(site_lib, **kw):
    scr = simulate_screen(site_lib, 200, 3.0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = SeqCNN(max_len=site_lib.max_len, channels=8, hidden=8)
    return LiftObjective(scr, site_lib, net, generator=torch.Generator().manual_seed(1),
                         batch_size=16, n_mc=64, mc_pool=512, val_frac=0.3, seed=0, **kw)


def test_early_stopping_restores_the_best_weights(site_lib):
    """After a noisy fit stops, the network and phi are those of the best validation value."""
    obj = _best_val_objective(site_lib)
    res = train(obj, steps=200, lr=0.05, eval_every=4, patience=2, show_progress=False)
    vals = res.history["val"]
    best = int(np.argmin(vals))
    assert vals[-1] > vals[best]  # the fit moved past its best point, so restoring matters
    assert res.best_step == res.history["step"][best]
    assert abs(obj.validation() - vals[best]) < 1e-6 * max(1.0, abs(vals[best]))
    assert abs(res.phi - res.history["phi"][best]) < 1e-6 * res.phi


def test_learn_phi_false_keeps_the_dispersion(site_lib):
    obj = _best_val_objective(site_lib, phi_init=3.0, learn_phi=False)
    assert all(p is not obj.log_phi for p in obj.parameters())
    res = train(obj, steps=20, lr=0.05, eval_every=10, patience=3, show_progress=False)
    assert abs(res.phi - 3.0) < 1e-6 and max(abs(p - 3.0) for p in res.history["phi"]) < 1e-6
    learned = _best_val_objective(site_lib, phi_init=3.0)
    res = train(learned, steps=20, lr=0.05, eval_every=10, patience=3, show_progress=False)
    assert abs(res.phi - 3.0) > 1e-3


def _unsorted_gap(res, screen, site_lib):
    """|log P(y = 0) predicted by the fit (eq. 36, per-sequence NB) - log(N0 / n_cells)|."""
    x = site_lib.sample(20000, torch.Generator().manual_seed(7))
    with torch.no_grad():
        f = predict(res, x)
    pred = float(-screen.moi * (1 - (1 + f / res.phi) ** (-res.phi)).mean())
    return abs(pred - math.log(screen.n0 / screen.n_cells))


@pytest.mark.slow
def test_lift_and_its_no_leavs_ablation_differ_at_high_moi(site_lib, one_thread):
    """LeaVS (App. D) is the likelihood of the unsorted cells: at MOI 10, LIFT's fitted f predicts
    the screen's unsorted fraction, and LIFT without LeaVS (the paper's "no regularisation"
    ablation) over-predicts activity on the library.

    Margins from seeds 0-3 (600 cells, 150 steps): |log-odds gap| with LeaVS 0.08-0.18, without
    0.34-0.87, difference 0.16-0.79. (Their PR AUCs were 2.8-114 and 5.9-69 times chance: too
    noisy at this size to order the two methods, so the test does not compare them.)
    """
    screen = simulate_screen(site_lib, 600, 10.0, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=150, batch_size=32, lr=1e-2, eval_every=25, show_progress=False, seed=0,
              net_kw=dict(channels=16, hidden=16), device="cpu")
    gap_lift = _unsorted_gap(fit_lift(screen, site_lib, **kw), screen, site_lib)
    gap_ablation = _unsorted_gap(fit_lift(screen, site_lib, leavs=False, **kw), screen, site_lib)
    assert gap_lift < 0.25, (gap_lift, gap_ablation)
    assert gap_ablation > gap_lift + 0.1, (gap_lift, gap_ablation)


@pytest.mark.slow
def test_conventional_training_learns_at_moi_1(site_lib, one_thread):
    """At MOI 1 a sorted cell is (mostly) one pair (x, y): conventional training must rank
    patterned sequences far above chance.

    Margin from seeds 0-3 (2500 cells, 120 steps): PR AUC 22-41 times chance (about 0.002);
    with 4000 cells and 200 steps, 31-94 times.
    """
    screen = simulate_screen(site_lib, 2500, 1.0, generator=torch.Generator().manual_seed(0))
    res = fit_conventional(screen, site_lib, steps=120, batch_size=32, lr=1e-2, eval_every=25,
                           net_kw=dict(channels=16, hidden=16), show_progress=False, seed=0,
                           device="cpu")
    test = make_test_set(site_lib, 20000, generator=torch.Generator().manual_seed(123))
    chance = float(test.label.float().mean())
    auc = evaluate(res, test)
    assert auc > 10 * chance, (auc, chance)


def _leavs_part(obj_kw, **kw):
    """N0' log P(y <= tau) of a LIFT objective: the loss with LeaVS minus the loss without,
    rescaled (the data term and L1 are the same deterministic sums in both)."""
    n = len(Y)
    with_leavs = _objective(LiftObjective, leavs=True, **obj_kw, **kw).loss(torch.arange(n))
    without = _objective(LiftObjective, leavs=False, **obj_kw).loss(torch.arange(n))
    return float((without.value - with_leavs.value).detach()) * (n + N0) / N0


def test_lift_leavs_with_cell_level_noise_is_the_poisson_mixture():
    """leavs_noise="cell": P(y = 0) = sum_n Pois(n; MOI) (1 + n V / phi)^-phi (one NB per cell
    of n sequences of activity V), estimated from 20,000 simulated cells; the per-sequence
    closed form LEAVS_POOLED is about 9 standard errors away."""
    n = np.arange(80)
    p0 = float(np.sum(stats.poisson.pmf(n, MOI) * (1 + n * V / PHI) ** -PHI))
    se = np.sqrt(np.sum(stats.poisson.pmf(n, MOI) * (1 + n * V / PHI) ** (-2 * PHI)) - p0**2)
    se_log = se / np.sqrt(20000) / p0
    got = _leavs_part(dict(n_mc=20000), leavs_noise="cell")
    assert abs(got - np.log(p0)) < 4 * se_log
    assert abs(got - LEAVS_POOLED) > 6 * se_log


def test_lift_objective_passes_its_options_on():
    """MOI 0 is refused; the estimator asked for is the one used ('pgf' at tau > 0 is refused
    when the loss is computed); a tau > 0 Monte Carlo term draws from the objective's own
    generator, not torch's global one."""
    with pytest.raises(ValueError, match=r"^moi must be > 0, got 0\.0$"):
        _objective(LiftObjective, moi=0.0)
    with pytest.raises(ValueError, match=r"^unknown LeaVS noise 'gamma': use 'sequence' or 'cell'$"):
        _objective(LiftObjective, leavs_noise="gamma")
    obj = _objective(LiftObjective, threshold=1.0, leavs_estimator="pgf")
    with pytest.raises(ValueError, match="'pgf' LeaVS estimator needs threshold 0"):
        obj.loss(torch.arange(len(Y)))
    values = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        values.append(float(_objective(LiftObjective, threshold=1.0).loss(torch.arange(4)).value.detach()))
    assert values[0] == values[1]


def test_leavs_log_p0_refusals_and_dtype():
    """Each refusal names its problem; the 'pgf' closed form only for tau = 0 with per-sequence
    noise; a float64 phi does not promote a float32 f's LeaVS term; pooled_mean without extra
    tokens returns no Monte Carlo values."""
    f = torch.full((8,), V, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^moi must be > 0, got 0\.0$"):
        leavs_log_p0(f, 0.0, PHI)
    pgf = (r"^the 'pgf' LeaVS estimator needs threshold 0 and per-sequence noise: "
           r"use estimator='cells'$")
    with pytest.raises(ValueError, match=pgf):
        leavs_log_p0(f, MOI, PHI, threshold=1.0, estimator="pgf")
    with pytest.raises(ValueError, match=pgf):
        leavs_log_p0(f, MOI, PHI, estimator="pgf", noise="cell")
    with pytest.raises(ValueError, match=r"^unknown LeaVS estimator 'exact': use 'auto', "):
        leavs_log_p0(f, MOI, PHI, estimator="exact")
    out = leavs_log_p0(f, MOI, torch.tensor(PHI, dtype=torch.float64))
    assert out.dtype == torch.float32 and abs(float(out) - LEAVS_POOLED) < 1e-6
    mean, f_mc = pooled_mean(FirstLetter(), _screen(), torch.arange(len(Y)))
    assert f_mc is None
    assert torch.allclose(mean, torch.tensor([_cell_mean(i) for i in range(len(Y))]))


def test_conventional_pairs_come_from_their_own_cells():
    """With a validation set, training pairs are the (x_ij, y_i) of the training cells only and
    validation pairs those of the validation cells, listed by hand from CELLS and Y."""
    obj = _objective(ConventionalObjective, val_frac=0.5)
    train, val = obj.train_cells.tolist(), obj.val_cells.tolist()
    assert sorted(train + val) == list(range(len(Y))) and len(val) == 2

    def by_hand(cells):
        return [(s, Y[i]) for i in cells for s in CELLS[i]]

    assert list(zip(obj.pair_x.tolist(), obj.pair_y.tolist(), strict=True)) == by_hand(train)
    assert list(zip(obj.val_x.tolist(), obj.val_y.tolist(), strict=True)) == by_hand(val)
    assert obj.n_units == len(by_hand(train))


# --- The objectives' bookkeeping: validation sizes, splits, defaults, devices, random draws ---


@pytest.mark.parametrize("n, frac, floor, expected", [
    (1000, 0.2, 100, 200),  # the fraction wins: 0.2 * 1000
    (40, 0.1, 100, 20),  # the floor wins, capped at half the cells: min(100, 40 // 2)
    (10, 0.1, 0, 1),  # no floor: round(1.0) = 1
    (3, 0.1, 0, 1),  # round(0.3) = 0, but never fewer than one cell
    (2, 0.9, 0, 1),  # round(1.8) = 2 would leave no training cell: at most n - 1
    (1000, 0.0, 100, 0),  # no validation set at all
])
def test_validation_size_by_hand(n, frac, floor, expected):
    assert validation_size(n, frac, floor) == expected


def test_screen_objective_refuses_an_empty_batch_and_passes_its_floor_on():
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        _objective(LiftObjective, batch_size=0)
    assert _objective(LiftObjective, batch_size=1).batch_units == 1
    obj = LiftObjective(_screen_of(CELLS * 63), LIBRARY, FirstLetter(), val_frac=0.01, val_min=5)
    assert len(obj.val_cells) == 5  # max(round(2.52), min(5, 126), 1)


def test_validation_size_default_floor_and_refusals():
    assert validation_size(1000, 0.01) == 100  # the default floor: 100 cells, not 10
    for frac in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"^val_frac must be in \[0, 1\), got {frac}$"):
            validation_size(100, frac)
    with pytest.raises(ValueError, match=r"^val_min must be >= 0, got -1$"):
        validation_size(100, 0.1, -1)


def test_split_cells_sizes_cover_and_generator():
    """Train and validation cells partition range(n); the default floor is 100 cells; the split
    is drawn from the given generator only (torch's global seed does not move it)."""
    splits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        splits.append(_split_cells(1000, 0.01, torch.Generator().manual_seed(3)))
    (train, val), (train2, val2) = splits
    assert len(val) == 100 and sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(train, train2) and torch.equal(val, val2)
    assert len(_split_cells(1000, 0.001, torch.Generator(), val_min=5)[1]) == 5


def test_check_screen_needs_two_sorted_cells():
    _check_screen(_screen_of(CELLS[:2]))
    message = (r"^the screen has 1 sequenced cells \(need >= 2\): screen more cells, raise the "
               r"MOI or lower the sorting threshold$")
    with pytest.raises(ValueError, match=message):
        _check_screen(_screen_of(CELLS[:1]))


def test_trim_drops_trailing_padding_only():
    tokens = encode(["CA", "C"])
    padded = torch.cat([tokens, torch.full((2, 3), PAD, dtype=tokens.dtype)], 1)
    assert torch.equal(trim(padded), tokens[:, :2])
    assert trim(torch.full((1, 4), PAD)).shape == (1, 1)  # never zero columns
    assert trim(torch.empty((0, 5), dtype=torch.long)).shape == (0, 1)


def test_objective_defaults_are_the_documented_ones():
    """The signature's defaults, which chapters and sweeps rely on when they pass nothing:
    phi = 1 and learned, no L1, 128 cells a batch, 512 Monte Carlo samples from a pool of 20,000
    (2,048 of them fixed for validation), 10% validation with a floor of 100 cells,
    deduplication on, validation seed 0."""
    obj = LiftObjective(_screen_of(CELLS * 63), LIBRARY, FirstLetter())  # 252 sorted cells
    assert obj.phi == 1.0 and obj.log_phi.requires_grad and obj.learn_phi
    assert (obj.l1, obj.batch_size, obj.n_mc, obj.dedupe, obj.seed) == (0.0, 128, 512, True, 0)
    assert len(obj.pool) == 20000 and torch.equal(obj.val_mc, obj.pool[:2048])
    assert len(obj.val_cells) == 100  # max(25, min(100, 126), 1)


def test_leavs_and_monte_carlo_need():
    """LeaVS only with unsorted cells (N0 > 0); a Monte Carlo pool only for LeaVS or L1 > 0."""
    no_unsorted = LiftObjective(_screen_of(CELLS, n0=0), LIBRARY, FirstLetter())
    assert not no_unsorted.use_leavs and not no_unsorted.need_mc and no_unsorted.pool is None
    one_unsorted = LiftObjective(_screen_of(CELLS, n0=1), LIBRARY, FirstLetter())
    assert one_unsorted.use_leavs and one_unsorted.need_mc
    plain = _objective(LiftObjective, leavs=False, l1=0.0)
    assert plain.pool is None and plain.val_mc is None and plain._mc_batch() is None
    assert _objective(LiftObjective, leavs=False, l1=L1).need_mc


def test_random_draws_come_from_the_objectives_generator():
    """The split, the Monte Carlo batches and the LeaVS cell simulation use the generator they
    are given: the same seed gives the same draws whatever torch's global seed."""
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        obj = _objective(LiftObjective, val_frac=0.5)
        f = torch.linspace(0.1, 3.0, 8)  # distinct values: which samples are drawn matters
        p0 = leavs_log_p0(f, MOI, PHI, threshold=1.0, estimator="cells",
                          generator=torch.Generator().manual_seed(5))
        draws.append((obj.val_cells, obj._mc_batch(), p0))
    for a, b in zip(*draws, strict=True):
        assert torch.equal(a, b)


def test_monte_carlo_batches_reach_every_pool_sample():
    obj = _objective(LiftObjective, n_mc=300)
    obj.pool = encode(["DAA", "DCW", "DW"])  # three distinct rows
    rows = {tuple(r) for r in obj._mc_batch().tolist()}
    assert rows == {tuple(r) for r in obj.pool.tolist()}


def test_objectives_keep_their_tensors_on_the_networks_device():
    """Built around a network on torch's shape-only 'meta' device, every tensor an objective
    holds is there too (a CPU-only check that nothing is left on the CPU), and LeaVS computed
    from f on that device stays on it."""
    net = FirstLetter().to("meta")
    assert _device_of(net) == torch.device("meta") and _device_of(torch.nn.Identity()).type == "cpu"
    lift = LiftObjective(_screen(), LIBRARY, net, generator=torch.Generator().manual_seed(0),
                         mc_pool=64, val_frac=0.5, l1=L1)
    conv = ConventionalObjective(_screen(), LIBRARY, net, mc_pool=64, val_frac=0.5)
    held = [lift.log_phi, lift.pool, lift.val_mc, lift.scr.tokens, lift.scr.y, lift.train_dev,
            lift.val_dev, lift._mc_batch(), conv.pair_x, conv.pair_y, conv.val_x, conv.val_y]
    assert all(t.device.type == "meta" for t in held)
    f = torch.full((8,), V, device="meta")
    for kw in (dict(), dict(threshold=1.0), dict(noise="cell"), dict(estimator="cells")):
        assert leavs_log_p0(f, MOI, PHI, generator=torch.Generator(), **kw).device.type == "meta"

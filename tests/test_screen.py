"""Tests of liftkit.lift.screen: the pooled screen simulator (LIFT eq. 5, App. C) and its CSR store."""

import math

import numpy as np
import pytest
import torch

from liftkit.lift.library import EmpiricalLibrary, SiteIndependentLibrary
from liftkit.lift.oracle import Oracle, motif_strength
from liftkit.lift.screen import Screen, simulate_screen

# a toy library: 4 sequences, one carrying a pattern (x[3] = P)
TOY = EmpiricalLibrary(["CARPAW", "CARAAW", "CAKAAW", "CARGW"], weights=[1, 3, 3, 3])


def test_seqs_per_cell_is_poisson_with_threshold_minus_one():
    # threshold -> every cell with >= 1 sequence and y > 0 is kept; use a huge s0 so y > 0 a.s.
    n, moi = 20000, 2.5
    scr = simulate_screen(TOY, n, moi, oracle=Oracle(s0=1e6),
                          generator=torch.Generator().manual_seed(0))
    k = scr.seqs_per_cell().double()
    # sorted cells = cells with >= 1 sequence: a zero-truncated Poisson(moi)
    p_pos = 1 - math.exp(-moi)
    assert abs(scr.n_sorted / n - p_pos) < 5 * math.sqrt(p_pos * (1 - p_pos) / n)
    mean_zt = moi / p_pos
    var_zt = mean_zt * (1 + moi - mean_zt)
    assert abs(float(k.mean()) - mean_zt) < 5 * math.sqrt(var_zt / len(k))
    # all cells (zeros included): Poisson mean and variance = moi
    full = torch.cat([k, torch.zeros(scr.n0, dtype=torch.float64)])
    assert abs(float(full.mean()) - moi) < 5 * math.sqrt(moi / n)
    assert abs(float(full.var()) - moi) < 0.05 * moi


def sorted_fraction_exact(strengths, probs, moi, phi=2.28):
    """Closed-form fraction of cells with y > 0 for a discrete library (App. D, eq. 38 form):
    P(y = 0) = exp(-MOI * sum_x p(x) [1 - (1 + s(x)/phi)^-phi]) with per-sequence NB noise."""
    p0 = (1 + strengths.double() / phi) ** (-phi)
    return float(1 - torch.exp(-moi * (probs.double() * (1 - p0)).sum()))


def test_sorted_fraction_matches_closed_form():
    n, moi = 30000, 1.5
    scr = simulate_screen(TOY, n, moi, oracle=Oracle(s0=0.1, mult=10),
                          generator=torch.Generator().manual_seed(1))
    strengths = motif_strength(TOY.support, s0=0.1, mult=10)
    expect = sorted_fraction_exact(strengths, TOY.probs, moi)
    assert abs(scr.n_sorted / n - expect) < 5 * math.sqrt(expect * (1 - expect) / n)
    assert scr.n_sorted + scr.n0 == n


def test_csr_consistency_and_ground_truth():
    lib = SiteIndependentLibrary.from_olga(20000)
    scr = simulate_screen(lib, 3000, 3.0, generator=torch.Generator().manual_seed(2))
    assert scr.cell_ptr[0] == 0 and scr.cell_ptr[-1] == scr.nnz
    assert (scr.seqs_per_cell() >= 1).all()
    assert (scr.y > scr.threshold).all()
    # y is the sum of the entries' activities
    owner = torch.repeat_interleave(torch.arange(scr.n_sorted), scr.seqs_per_cell())
    sums = torch.zeros(scr.n_sorted).index_add_(0, owner, scr.seq_activity)
    assert torch.allclose(sums, scr.y)
    # unique tokens
    assert len(torch.unique(scr.tokens, dim=0)) == len(scr.tokens)
    x, y = scr.pairs()
    assert len(x) == len(y) == scr.nnz
    # pairs of some cells: their entries, in the given cell order, with their cells' counts
    cells = torch.tensor([4, 1])
    xs, ys = scr.pairs(cells)
    sub = scr.subset(cells)
    assert torch.equal(scr.tokens[xs], sub.tokens[sub.seq_idx])
    assert torch.equal(ys, sub.pairs()[1])


def test_subset_reindexes():
    lib = SiteIndependentLibrary.from_olga(20000)
    scr = simulate_screen(lib, 2000, 3.0, generator=torch.Generator().manual_seed(3))
    cells = torch.tensor([5, 0, 7])
    sub = scr.subset(cells)
    assert sub.n_sorted == 3 and sub.n0 == scr.n0 and sub.n_cells == scr.n_cells
    for new, old in enumerate(cells.tolist()):
        a = sub.tokens[sub.seq_idx[sub.cell_ptr[new] : sub.cell_ptr[new + 1]]]
        b = scr.tokens[scr.seq_idx[scr.cell_ptr[old] : scr.cell_ptr[old + 1]]]
        assert torch.equal(a, b)
        assert sub.y[new] == scr.y[old]
    assert len(sub.tokens) <= sub.nnz
    with pytest.raises(ValueError):
        scr.subset([scr.n_sorted])
    assert isinstance(scr.to("cpu"), Screen)


def test_deterministic():
    a = simulate_screen(TOY, 500, 2.0, generator=torch.Generator().manual_seed(9))
    b = simulate_screen(TOY, 500, 2.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.y, b.y) and torch.equal(a.seq_idx, b.seq_idx)


@pytest.mark.parametrize(
    "kw, match",
    [({"n_cells": 0, "moi": 1.0}, "n_cells"), ({"n_cells": 10, "moi": 0.0}, "moi"),
     ({"n_cells": 10, "moi": -1.0}, "moi"), ({"n_cells": 10, "moi": float("nan")}, "moi")],
)
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        simulate_screen(TOY, **kw)


def test_threshold_sorts_fewer_cells():
    g = np.random.default_rng(0)
    seed = int(g.integers(1000))
    a = simulate_screen(TOY, 5000, 3.0, threshold=0, generator=torch.Generator().manual_seed(seed))
    b = simulate_screen(TOY, 5000, 3.0, threshold=2, generator=torch.Generator().manual_seed(seed))
    assert b.n_sorted < a.n_sorted and (b.y > 2).all()

"""Tests of liftkit.lift.oracle (LIFT App. C ground truth)."""

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.lift.oracle import PHI, Oracle, motif_strength, pattern_matrix, sample_activity


def test_patterns_zero_indexed():
    seqs = [
        "CARPAAAAAW",  # x[3] = P
        "CARAANAAAW",  # x[5] = N
        "CARAAAPCAW",  # x[6:8] = PC
        "CARCACSSAW",  # all three
        "CARAAAAAAW",  # none
        "CAR",  # too short for any pattern
    ]
    pm = pattern_matrix(seqs)
    assert pm.tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, True, True],
        [False, False, False],
        [False, False, False],
    ]
    s = motif_strength(seqs, s0=0.1, mult=10)
    assert torch.allclose(s, torch.tensor([1.0, 1.0, 1.0, 100.0, 0.1, 0.1]))
    s_any = motif_strength(seqs, s0=0.1, mult=10, compound=False)
    assert torch.allclose(s_any, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1, 0.1]))


def test_custom_patterns():
    s = motif_strength(["AWWA", "AAAA"], s0=1.0, mult=3.0, patterns=[(1, ("WW",))])
    assert s.tolist() == [3.0, 1.0]
    with pytest.raises(ValueError):
        motif_strength(["AAAA"], patterns=[(1, ("W", "WW"))])
    with pytest.raises(ValueError):
        motif_strength(["AAAA"], s0=0.0)


def test_nb_activity_moments():
    s = 5.0
    phi = 2.28
    y = sample_activity(torch.full((200_000,), s), phi=phi, rng=0)
    n = len(y)
    var = s + s**2 / phi
    assert abs(y.mean() - s) < 5 * np.sqrt(var / n)
    # NB pmf at zero: (1 + s/phi)^-phi
    p0 = stats.nbinom.pmf(0, phi, phi / (phi + s))
    assert abs((y == 0).mean() - p0) < 5 * np.sqrt(p0 * (1 - p0) / n)
    assert abs(y.var() - var) < 0.05 * var


def test_activity_rejects_bad_input():
    with pytest.raises(ValueError):
        sample_activity(np.array([-1.0]))
    with pytest.raises(ValueError):
        sample_activity(np.array([1.0]), phi=0)


def test_oracle_strength_by_hand():
    oracle = Oracle(patterns=[(1, ("WW",)), (4, ("A", "C"))], s0=0.5, mult=3.0)
    # "AWWAC": WW at 1 and C at 4 -> 0.5 * 3**2; "AWWAG": WW only -> 0.5 * 3; "GGGGG": none
    s = oracle.strength(["AWWAC", "AWWAG", "GGGGG"])
    assert s.tolist() == [4.5, 1.5, 0.5]
    assert Oracle(patterns=oracle.patterns, s0=0.5, mult=3.0, compound=False).strength(
        ["AWWAC"]).tolist() == [1.5]
    assert oracle.pattern_matrix(["AWWAC"]).tolist() == [[True, True]]


def test_oracle_is_a_value_and_samples_nb():
    a = Oracle(patterns=[(3, ["P", "C"])])
    assert a == Oracle(patterns=((3, ("P", "C")),)) and hash(a) == hash(Oracle(patterns=a.patterns))
    assert Oracle().phi == PHI and Oracle().strength(["CARPAAAAAW"]).tolist() == [1.0]
    s = torch.full((1000,), 5.0)
    np.testing.assert_array_equal(Oracle(phi=3.0).sample(s, rng=1),
                                  sample_activity(s, phi=3.0, rng=1))
    for bad in (dict(s0=0.0), dict(mult=-1.0), dict(phi=0.0), dict(patterns=[(1, ("W", "WW"))])):
        with pytest.raises(ValueError):
            Oracle(**bad)

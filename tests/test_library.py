"""Tests of liftkit.lift.library: encoding, the OLGA pool, the site-independent synthesis model."""

import numpy as np
import pytest
import torch

from liftkit.lift.library import (
    ALPHABET,
    PAD,
    CDRH3Library,
    EmpiricalLibrary,
    SiteIndependentLibrary,
    decode,
    encode,
    make_library,
    olga_pool,
)


def test_encode_decode_roundtrip_and_padding():
    seqs = ["CARW", "CASSLGW", "A"]
    tok = encode(seqs, max_len=9)
    assert tok.shape == (3, 9) and tok.dtype == torch.long
    assert (tok[2, 1:] == PAD).all()
    assert decode(tok) == seqs


@pytest.mark.parametrize("bad", [["CARXW"], ["car"], ["CA RW"], [""]])
def test_encode_rejects_bad_letters(bad):
    with pytest.raises(ValueError):
        encode(bad)


def test_encode_rejects_too_long_and_plain_string():
    with pytest.raises(ValueError, match="max_len"):
        encode(["CARWWW"], max_len=3)
    with pytest.raises(ValueError, match="list"):
        encode("CARW")


def test_olga_pool_is_cached_and_seeded(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path))
    olga_pool.cache_clear()
    a = olga_pool(50, seed=3)
    assert (tmp_path / "olga" / "human_B_heavy_seed3_n50.txt").exists()
    olga_pool.cache_clear()
    b = olga_pool(50, seed=3)  # read back from disk
    assert a == b and len(a) == 50
    assert all(s[0] == "C" and set(s) <= set(ALPHABET) for s in a)
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    olga_pool(20, seed=4, use_disk=False)
    assert np.array_equal(np.random.get_state()[1], state)  # global NumPy RNG untouched  # noqa: NPY002


def test_cdrh3_library_pool_sampling():
    lib = CDRH3Library(max_len=32, pool_size=2000)
    g = torch.Generator().manual_seed(0)
    x = lib.sample(500, g)
    assert x.shape == (500, 32)
    y = CDRH3Library(max_len=32, pool_size=2000).sample(500, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    assert set(lib.decode(x)) <= set(olga_pool(2000, 0))


def test_cdrh3_exact_log_prob_is_finite():
    lib = CDRH3Library(pool_size=200)
    lp = lib.log_prob(lib.encode(["CARDYW"]))
    assert torch.isfinite(lp).all() and lp.item() < 0


def test_site_library_fit_recovers_marginals():
    seqs = make_library("olga", pool_size=20000).decode(
        CDRH3Library(pool_size=20000).pool()
    )
    lib = SiteIndependentLibrary.fit(seqs, max_len=32)
    g = torch.Generator().manual_seed(1)
    n = 40000
    x = lib.sample(n, g)
    lengths = (x != PAD).sum(1)
    # length distribution: each frequency within 5 binomial standard errors of the model's
    freq = torch.bincount(lengths, minlength=33).double() / n
    se = torch.sqrt(lib.length_probs * (1 - lib.length_probs) / n)
    assert ((freq - lib.length_probs).abs() <= 5 * se + 1e-12).all()
    # first letter is C in (almost) every CDRH3, and so in the fitted model
    assert (x[:, 0] == ALPHABET.index("C")).float().mean() > 0.95
    # log_prob sums to one over the support's samples (importance check: E_p[1/p * p] = 1)
    lp = lib.log_prob(x)
    assert torch.isfinite(lp).all() and (lp < 0).all()


def test_site_library_log_prob_normalised_on_tiny_model():
    # a 2-letter alphabet subset model with max_len 2: enumerate every sequence
    lib = SiteIndependentLibrary.fit(["AC", "A", "CA", "CC", "A"], max_len=2)
    seqs = [a for a in ALPHABET] + [a + b for a in ALPHABET for b in ALPHABET]
    total = lib.log_prob(encode(seqs, 2)).double().exp().sum()
    assert abs(float(total) - 1.0) < 1e-6


def test_empirical_library_exact():
    lib = EmpiricalLibrary(["AAA", "CC"], weights=[3, 1])
    x = lib.sample(4000, torch.Generator().manual_seed(0))
    frac = (x[:, 2] == ALPHABET.index("A")).float().mean()
    assert abs(float(frac) - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 4000)
    assert torch.allclose(lib.log_prob(lib.encode(["CC"])), torch.log(torch.tensor([0.25])))


def test_make_library_rejects_unknown():
    with pytest.raises(ValueError, match="unknown library"):
        make_library("nope")

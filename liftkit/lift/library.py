"""Sequence libraries p(x) for LIFT (LIFT eq. 5; App. C).

A library is the distribution the screen draws its sequences from and that the Monte Carlo
terms of the objective (LIFT eq. 7, eq. 36) sample. Every library here shares one interface:

- ``sample(n, generator) -> LongTensor (n, max_len)``: encoded sequences, padded with ``PAD``;
- ``log_prob(tokens) -> Tensor (n,)``: log p(x);
- ``encode(seqs)`` / ``decode(tokens)``: strings <-> tokens.

Three libraries:

- :class:`CDRH3Library`: the OLGA ``human_B_heavy`` V(D)J model (real human CDRH3 amino-acid
  sequences with the exact generation probability), the stand-in for the paper's variational
  synthesis library. OLGA samples in pure Python (a few thousand sequences/s), so sampling can
  draw from a cached pool (``pool_size``) instead of running OLGA for every call.
- :class:`SiteIndependentLibrary`: a fast site-independent synthesis model (a length distribution
  and one categorical per position given the length) fitted to OLGA samples, in the spirit of
  the paper's variational synthesis (which is a product of per-position categoricals, Weinstein
  et al. 2024). Samples and scores in vectorised torch.
- :class:`EmpiricalLibrary`: a categorical over a given list of sequences (exact expectations
  for tests and toy examples).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liftkit.data import cache_dir
from liftkit.utils import atomic_path

#: The 20 amino acids; token ``i`` is ``ALPHABET[i]``.
ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
#: Padding token (one past the alphabet); one-hot encodes it as all zeros.
PAD = len(ALPHABET)
_LOOKUP = np.full(256, -1, dtype=np.int64)
for _i, _a in enumerate(ALPHABET):
    _LOOKUP[ord(_a)] = _i


def encode(seqs: Sequence[str], max_len: int | None = None) -> torch.Tensor:
    """Encode amino-acid strings as a padded LongTensor ``(n, max_len)``.

    Parameters
    ----------
    seqs
        Upper-case amino-acid strings over :data:`ALPHABET`.
    max_len
        Width of the result; defaults to the longest sequence.

    Raises
    ------
    ValueError
        On letters outside the alphabet, empty sequences, or sequences longer than ``max_len``.

    Examples
    --------
    >>> encode(["CAR", "CW"], max_len=4)
    tensor([[ 1,  0, 14, 20],
            [ 1, 18, 20, 20]])
    """
    if isinstance(seqs, str):
        raise ValueError("encode expects a list of sequences, not one string: wrap it in a list")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if len(seqs) and lengths.min() == 0:
        raise ValueError("empty sequence given to encode: every sequence needs >= 1 amino acid")
    width = int(lengths.max()) if len(seqs) else 0
    if max_len is None:
        max_len = width
    if width > max_len:
        raise ValueError(
            f"a sequence has length {width} > max_len={max_len}: raise max_len or drop it"
        )
    out = np.full((len(seqs), max_len), PAD, dtype=np.int64)
    if len(seqs):
        joined = np.frombuffer("".join(seqs).encode("ascii", "replace"), dtype=np.uint8)
        codes = _LOOKUP[joined]
        if (codes < 0).any():
            bad = sorted({chr(c) for c in joined[codes < 0]})
            raise ValueError(
                f"letters {bad} are not amino acids of the alphabet {ALPHABET!r}: "
                "use upper-case one-letter codes"
            )
        rows = np.repeat(np.arange(len(seqs)), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = codes
    return torch.from_numpy(out)


def decode(tokens: torch.Tensor) -> list[str]:
    """Decode padded tokens back to strings (padding dropped).

    Examples
    --------
    >>> decode(encode(["CAR", "CW"], max_len=4))
    ['CAR', 'CW']
    """
    arr = tokens.detach().cpu().numpy()
    letters = np.frombuffer((ALPHABET + " ").encode(), dtype=np.uint8)[arr]
    return [row.tobytes().decode().rstrip() for row in letters]


def lengths_of(tokens: torch.Tensor) -> torch.Tensor:
    """Number of non-padding positions per row.

    Examples
    --------
    >>> lengths_of(encode(["CAR", "CW"], max_len=4))
    tensor([3, 2])
    """
    return (tokens != PAD).sum(dim=1)


class SequenceLibrary:
    """Base class: a distribution p(x) over padded amino-acid sequences of at most ``max_len``."""

    alphabet = ALPHABET
    pad = PAD
    max_len: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` sequences x ~ p as tokens ``(n, max_len)``."""
        raise NotImplementedError

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(x) of each row of ``tokens``: ``(n,)``."""
        raise NotImplementedError

    def encode(self, seqs: Sequence[str]) -> torch.Tensor:
        """Encode strings at this library's width ``max_len``."""
        return encode(seqs, self.max_len)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Decode tokens to strings."""
        return decode(tokens)



def _check_n(n: int) -> int:
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"number of samples must be a non-negative integer, got {n!r}")
    return int(n)


def _seed_from(generator: torch.Generator | None) -> int:
    """An integer seed drawn from a torch generator (or the global torch RNG)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


# ---------------------------------------------------------------------------------------------
# OLGA
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _olga_models() -> tuple[Any, Any]:
    import olga
    import olga.generation_probability as pgen
    import olga.load_model as load_model
    import olga.sequence_generation as seq_gen

    root = Path(olga.__file__).parent / "default_models" / "human_B_heavy"
    genomic = load_model.GenomicDataVDJ()
    genomic.load_igor_genomic_data(
        str(root / "model_params.txt"),
        str(root / "V_gene_CDR3_anchors.csv"),
        str(root / "J_gene_CDR3_anchors.csv"),
    )
    generative = load_model.GenerativeModelVDJ()
    generative.load_and_process_igor_model(str(root / "model_marginals.txt"))
    return seq_gen.SequenceGenerationVDJ(generative, genomic), pgen.GenerationProbabilityVDJ(
        generative, genomic
    )


def _olga_generate(n: int, seed: int) -> list[str]:
    """Run OLGA for ``n`` productive CDRH3s; OLGA uses NumPy's global RNG, which is restored."""
    generator, _ = _olga_models()
    state = np.random.get_state()  # noqa: NPY002 (OLGA draws from the global RNG)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    try:
        return [generator.gen_rnd_prod_CDR3()[1] for _ in range(n)]
    finally:
        np.random.set_state(state)  # noqa: NPY002


@functools.lru_cache(maxsize=8)
def olga_pool(n: int, seed: int = 0, use_disk: bool = True) -> tuple[str, ...]:
    """``n`` OLGA human_B_heavy CDRH3 sequences for ``seed``, cached in memory and on disk.

    The disk cache is ``<liftkit.data.cache_dir()>/olga/human_B_heavy_seed{seed}_n{n}.txt`` (so
    ``$LIFTKIT_DATA_DIR`` moves it with the datasets), written atomically
    (temp file, then rename), so an interrupted run never leaves a half-written pool. A pool of
    ``n`` is the prefix of any larger pool with the same seed only by accident: pools are keyed by
    ``(n, seed)``.

    Examples
    --------
    >>> olga_pool(3, seed=0)[0][0]  # doctest: +SKIP
    'C'
    """
    n = _check_n(n)
    path = cache_dir() / "olga" / f"human_B_heavy_seed{seed}_n{n}.txt"
    if use_disk and path.exists():
        seqs = path.read_text().split()
        if len(seqs) == n:
            return tuple(seqs)
    seqs = _olga_generate(n, seed)
    if use_disk:
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(seqs) + "\n")
    return tuple(seqs)


class CDRH3Library(SequenceLibrary):
    """OLGA's human_B_heavy CDRH3 model as the library p(x) (LIFT App. C stand-in).

    Parameters
    ----------
    max_len
        Sequences longer than this are rejected (p is conditioned on length <= max_len; CDRH3s
        from this model are 4-44 long, mean about 18, and fewer than 0.5% exceed 32). (S)
    pool_size
        ``None`` runs OLGA for every ``sample`` call (exact, a few thousand sequences/s).
        An integer draws uniformly with replacement from a cached pool of that many OLGA
        sequences (the empirical approximation of p; fast, used by the chapters).
    pool_seed
        Seed of the cached pool.

    Examples
    --------
    >>> lib = CDRH3Library(pool_size=2000)  # doctest: +SKIP
    >>> lib.sample(4, torch.Generator().manual_seed(0)).shape  # doctest: +SKIP
    torch.Size([4, 32])
    """

    def __init__(
        self, max_len: int = 32, pool_size: int | None = 20000, pool_seed: int = 0
    ) -> None:
        if max_len < 9:
            raise ValueError(f"max_len={max_len} is too short for CDRH3s: use >= 9")
        self.max_len = int(max_len)
        self.pool_size = pool_size
        self.pool_seed = pool_seed
        self._pool: torch.Tensor | None = None

    def pool(self) -> torch.Tensor:
        """The cached pool, encoded (sequences longer than ``max_len`` dropped)."""
        if self.pool_size is None:
            raise ValueError("this CDRH3Library has pool_size=None: it samples OLGA directly")
        if self._pool is None:
            seqs = [s for s in olga_pool(self.pool_size, self.pool_seed) if len(s) <= self.max_len]
            self._pool = encode(seqs, self.max_len)
        return self._pool

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` sequences (from the pool, or fresh from OLGA when ``pool_size`` is None)."""
        n = _check_n(n)
        if self.pool_size is not None:
            pool = self.pool()
            return pool[torch.randint(0, len(pool), (n,), generator=generator)]
        seed = _seed_from(generator)
        out: list[str] = []
        while len(out) < n:  # rejection of over-long sequences: p conditioned on length
            batch = _olga_generate(max(n - len(out), 16) + 8, seed)
            out.extend(s for s in batch if len(s) <= self.max_len)
            seed += 1
        return encode(out[:n], self.max_len)

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact log P_gen from OLGA (slow: about 1 s per sequence; not renormalised for the
        length cut, which removes < 0.5% of the mass)."""
        _, pg = _olga_models()
        vals = [pg.compute_aa_CDR3_pgen(s) for s in self.decode(tokens)]
        with np.errstate(divide="ignore"):
            return torch.log(torch.tensor(vals, dtype=torch.float64)).float()


# ---------------------------------------------------------------------------------------------
# Site-independent synthesis model
# ---------------------------------------------------------------------------------------------


class SiteIndependentLibrary(SequenceLibrary):
    """Site-independent synthesis model: p(x) = p(L) prod_t p(x_t | L).

    A fast stand-in for the paper's variational synthesis library (Weinstein et al. 2024 build
    libraries from per-position categorical distributions). Fit it to OLGA samples with
    :meth:`fit`. The per-position distribution given the length is smoothed towards the
    per-position distribution counted from the start of the sequence (weight ``smoothing``
    pseudo-counts), so rare lengths borrow strength; this smoothing is a choice (S).

    Parameters
    ----------
    length_probs
        ``(max_len + 1,)`` probabilities of each length (index = length; entry 0 must be 0).
    site_probs
        ``(max_len + 1, max_len, 20)``: row ``[L, t]`` is p(x_t | L) for t < L.

    Examples
    --------
    >>> lib = SiteIndependentLibrary.fit(["CARW", "CAKW", "CTRDW"], max_len=6)
    >>> lib.sample(2, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 6])
    >>> bool(lib.log_prob(lib.encode(["CARW"])) < 0)
    True
    """

    def __init__(self, length_probs: torch.Tensor, site_probs: torch.Tensor) -> None:
        length_probs = torch.as_tensor(length_probs, dtype=torch.float64)
        site_probs = torch.as_tensor(site_probs, dtype=torch.float64)
        max_len = site_probs.shape[1]
        if length_probs.shape != (max_len + 1,) or site_probs.shape != (
            max_len + 1,
            max_len,
            PAD,
        ):
            raise ValueError(
                "length_probs must be (max_len+1,) and site_probs (max_len+1, max_len, 20)"
            )
        if length_probs[0] > 0:
            raise ValueError("length 0 must have probability 0 in length_probs")
        self.max_len = int(max_len)
        self.length_probs = length_probs / length_probs.sum()
        self.site_probs = site_probs / site_probs.sum(-1, keepdim=True).clamp_min(1e-300)
        self._len_cdf = torch.cumsum(self.length_probs, 0)
        cdf = torch.cumsum(self.site_probs, -1)
        cdf[..., -1] = 1.0
        # Row k = L * max_len + t of the table, shifted by k, makes one globally sorted array:
        # inverse-CDF sampling of every (sequence, position) is then a single searchsorted.
        rows = torch.arange((max_len + 1) * max_len, dtype=torch.float64)[:, None]
        self._flat_cdf = (cdf.reshape(-1, PAD) + rows).reshape(-1).contiguous()
        self._log_len = torch.log(self.length_probs)
        self._log_site = torch.log(self.site_probs.clamp_min(1e-300))

    @classmethod
    def fit(
        cls, seqs: Sequence[str] | torch.Tensor, max_len: int = 32, smoothing: float = 1.0
    ) -> SiteIndependentLibrary:
        """Fit by counting (the maximum-likelihood fit, plus smoothing pseudo-counts).

        Parameters
        ----------
        seqs
            Training sequences (strings or tokens); those longer than ``max_len`` are dropped.
        max_len
            Longest sequence the model generates.
        smoothing
            Pseudo-count weight of the position-from-start distribution in each p(x_t | L).
        """
        if isinstance(seqs, torch.Tensor):
            seqs = decode(seqs)
        seqs = [s for s in seqs if len(s) <= max_len]
        if len(seqs) == 0:
            raise ValueError("no training sequences of length <= max_len to fit the library")
        tokens = encode(seqs, max_len)
        lengths = lengths_of(tokens)
        n = len(seqs)
        counts_len = torch.bincount(lengths, minlength=max_len + 1).double()
        valid = tokens != PAD
        pos = torch.arange(max_len).expand(n, max_len)
        ln = lengths[:, None].expand(n, max_len)
        flat = ((ln * max_len + pos) * PAD + tokens.clamp_max(PAD - 1))[valid]
        counts = torch.bincount(flat, minlength=(max_len + 1) * max_len * PAD).double()
        counts = counts.view(max_len + 1, max_len, PAD)
        start = counts.sum(0)
        start = (start + 0.5) / (start + 0.5).sum(-1, keepdim=True)
        site = counts + smoothing * start[None]
        return cls(counts_len, site)

    @classmethod
    def from_olga(
        cls, n: int = 20000, seed: int = 0, max_len: int = 32, smoothing: float = 1.0
    ) -> SiteIndependentLibrary:
        """Fit to a cached pool of ``n`` OLGA human_B_heavy sequences (see :func:`olga_pool`)."""
        return cls.fit(olga_pool(n, seed), max_len=max_len, smoothing=smoothing)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverse-CDF sampling of lengths and then every position at once (vectorised)."""
        n = _check_n(n)
        u_len = torch.rand(n, generator=generator, dtype=torch.float64)
        lengths = torch.searchsorted(self._len_cdf, u_len[:, None]).squeeze(1)
        lengths = lengths.clamp(1, self.max_len)
        u = torch.rand(n, self.max_len, generator=generator, dtype=torch.float64)
        row = lengths[:, None] * self.max_len + torch.arange(self.max_len)[None, :]
        flat = torch.searchsorted(self._flat_cdf, row.double() + u)
        tokens = (flat - row * PAD).clamp(0, PAD - 1)
        tokens[torch.arange(self.max_len)[None, :] >= lengths[:, None]] = PAD
        return tokens

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(L) + sum_t log p(x_t | L), vectorised."""
        tokens = tokens.cpu()
        lengths = lengths_of(tokens)
        valid = tokens != PAD
        lp = self._log_site[lengths][
            torch.arange(len(tokens))[:, None],
            torch.arange(tokens.shape[1])[None, :],
            tokens.clamp_max(PAD - 1),
        ]
        return (self._log_len[lengths] + (lp * valid).sum(1)).float()


# ---------------------------------------------------------------------------------------------
# Empirical library (exact expectations)
# ---------------------------------------------------------------------------------------------


class EmpiricalLibrary(SequenceLibrary):
    """A categorical distribution over given sequences (exact expectations; tests and toys).

    Parameters
    ----------
    seqs
        The support.
    weights
        Unnormalised probabilities (default uniform).
    max_len
        Token width (default: the longest sequence).

    Examples
    --------
    >>> lib = EmpiricalLibrary(["AAA", "CC"], weights=[3, 1])
    >>> lib.log_prob(lib.encode(["CC"])).exp()
    tensor([0.2500])
    """

    def __init__(
        self,
        seqs: Sequence[str],
        weights: Sequence[float] | None = None,
        max_len: int | None = None,
    ) -> None:
        if len(seqs) == 0:
            raise ValueError("EmpiricalLibrary needs at least one sequence")
        self.support = encode(seqs, max_len)
        self.max_len = self.support.shape[1]
        w = torch.ones(len(seqs), dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64
        )
        if w.shape != (len(seqs),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be non-negative, one per sequence, not all zero")
        self.probs = w / w.sum()
        self._keys = {hashlib.sha1(r.numpy().tobytes()).hexdigest(): i
                      for i, r in enumerate(self.support)}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` members of the support with their probabilities."""
        n = _check_n(n)
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return self.support[idx]

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(x): the member's log probability, ``-inf`` outside the support."""
        out = torch.full((len(tokens),), -float("inf"))
        for i, row in enumerate(tokens.cpu()):  # toy libraries only: a dictionary look-up
            j = self._keys.get(hashlib.sha1(row.numpy().tobytes()).hexdigest())
            if j is not None:
                out[i] = float(torch.log(self.probs[j]))
        return out


def make_library(
    name: str, max_len: int = 32, pool_size: int = 20000, seed: int = 0
) -> CDRH3Library | SiteIndependentLibrary:
    """Build a library by name: ``"olga"`` (pooled CDRH3Library) or ``"site"`` (fitted model).

    Raises
    ------
    ValueError
        Any other name.

    Examples
    --------
    >>> make_library("site", pool_size=2000).max_len  # doctest: +SKIP
    32
    """
    if name == "olga":
        return CDRH3Library(max_len=max_len, pool_size=pool_size, pool_seed=seed)
    if name == "site":
        return SiteIndependentLibrary.from_olga(pool_size, seed=seed, max_len=max_len)
    raise ValueError(f"unknown library {name!r}: use 'olga' or 'site'")

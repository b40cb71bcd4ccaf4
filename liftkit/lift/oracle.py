"""Ground-truth activity of the synthetic experiment (LIFT App. C).

The deterministic strength is ``s(x) = s0 * mult ** (number of patterns present)``; each test of
a sequence returns a negative binomial count with mean ``s`` and variance ``s + s**2 / phi``
(``phi = 2.28``). The default patterns are the paper's, zero-indexed: ``x[3] in {P, C}``,
``x[5] in {N, C}``, ``x[6:8] in {PC, SS}``. The base strength ``s0`` and whether patterns
compound were lost from the paper text: both are parameters (S).

:class:`Oracle` bundles the five constants (patterns, s0, mult, compound, phi) so the screen
simulator, the test sets and the experiments take one argument instead of five.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from liftkit.lift.library import PAD, encode

#: (start position, allowed strings) for each pattern, zero-indexed (LIFT App. C).
DEFAULT_PATTERNS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (3, ("P", "C")),
    (5, ("N", "C")),
    (6, ("PC", "SS")),
)
#: NB dispersion of App. C.
PHI = 2.28


def _as_tokens(seqs: Sequence[str] | torch.Tensor) -> torch.Tensor:
    if isinstance(seqs, torch.Tensor):
        if seqs.dtype != torch.long or seqs.dim() != 2:
            raise ValueError("tokens must be a 2-D LongTensor (n, L): use liftkit.lift.library.encode")
        return seqs
    return encode(list(seqs))


def _check_patterns(patterns) -> None:
    for item in patterns:
        if len(item) != 2 or int(item[0]) < 0 or not item[1]:
            raise ValueError(
                f"pattern {item!r} must be (start >= 0, non-empty tuple of strings): "
                "e.g. (3, ('P', 'C'))"
            )
        if len({len(s) for s in item[1]}) != 1:
            raise ValueError(f"pattern {item!r}: all alternatives must have the same length")


def pattern_matrix(
    seqs: Sequence[str] | torch.Tensor,
    patterns: Sequence[tuple[int, Sequence[str]]] = DEFAULT_PATTERNS,
) -> torch.Tensor:
    """Boolean ``(n, n_patterns)``: which pattern each sequence carries (vectorised on tokens)."""
    _check_patterns(patterns)
    tokens = _as_tokens(seqs)
    n, width = tokens.shape
    need = max(int(start) + len(alts[0]) for start, alts in patterns)
    if width < need:  # short sequences cannot carry a late pattern: pad so slicing is safe
        tokens = torch.cat([tokens, tokens.new_full((n, need - width), PAD)], dim=1)
    cols = []
    for start, alts in patterns:
        start = int(start)
        window = tokens[:, start : start + len(alts[0])]
        codes = encode(list(alts)).to(tokens.device)  # (n_alts, len)
        hit = (window[:, None, :] == codes[None]).all(-1).any(-1)
        cols.append(hit)
    return torch.stack(cols, dim=1)


def motif_strength(
    seqs: Sequence[str] | torch.Tensor,
    s0: float = 0.1,
    mult: float = 10.0,
    patterns: Sequence[tuple[int, Sequence[str]]] = DEFAULT_PATTERNS,
    compound: bool = True,
) -> torch.Tensor:
    """Deterministic observable strength s(x) (LIFT App. C).

    Parameters
    ----------
    seqs
        Strings or encoded tokens ``(n, L)``.
    s0
        Base strength of a sequence with no pattern. Lost from the paper (S: 0.1).
    mult
        Multiplier per pattern (paper: 10).
    patterns
        ``(start, allowed strings)`` pairs, zero-indexed.
    compound
        ``True``: ``s0 * mult**k`` for k patterns present (S). ``False``: the other reading,
        ``s0 * mult`` if any pattern is present.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float strengths.
    """
    if s0 <= 0 or mult <= 0:
        raise ValueError(f"s0 and mult must be positive, got s0={s0}, mult={mult}")
    k = pattern_matrix(seqs, patterns).sum(1)
    if not compound:
        k = (k > 0).long()
    return s0 * torch.pow(torch.tensor(float(mult)), k.float())


def sample_activity(
    strength: torch.Tensor | np.ndarray,
    phi: float = PHI,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """NB activity with mean ``strength`` and variance ``s + s**2/phi`` (LIFT App. C).

    Drawn as the gamma-Poisson mixture Poisson(Gamma(shape=phi, scale=s/phi)) with NumPy's
    vectorised generators (``rng`` a NumPy Generator or seed) so that a seed fixes the numbers.
    """
    if phi <= 0:
        raise ValueError(f"phi must be positive, got {phi}")
    s = strength.detach().cpu().numpy() if isinstance(strength, torch.Tensor) else np.asarray(
        strength
    )
    if (s < 0).any():
        raise ValueError("strengths must be non-negative")
    rng = np.random.default_rng(rng)
    rate = rng.gamma(phi, s / phi)
    return rng.poisson(rate).astype(np.float64)


@dataclass(frozen=True)
class Oracle:
    """The ground truth of the synthetic experiment (LIFT App. C): strength and NB noise.

    Attributes
    ----------
    patterns
        ``(start, allowed strings)`` pairs, zero-indexed (default: the paper's three).
    s0
        Base strength of a sequence carrying no pattern (S: 0.1).
    mult
        Multiplier per pattern (paper: 10).
    compound
        ``True``: ``s0 * mult**k`` for k patterns (S); ``False``: ``s0 * mult`` if any.
    phi
        NB dispersion of each test of a sequence (paper: 2.28).

    Examples
    --------
    >>> Oracle(s0=0.1).strength(["CARPAAAAAW", "CARAAAAAAW"]).tolist()
    [1.0, 0.10000000149011612]
    """

    patterns: Sequence[tuple[int, Sequence[str]]] = DEFAULT_PATTERNS
    s0: float = 0.1
    mult: float = 10.0
    compound: bool = True
    phi: float = PHI

    def __post_init__(self) -> None:
        # fail at construction, not deep inside a simulation
        _check_patterns(self.patterns)
        if self.s0 <= 0 or self.mult <= 0 or self.phi <= 0:
            raise ValueError(
                f"s0, mult and phi must be positive, got s0={self.s0}, mult={self.mult}, "
                f"phi={self.phi}"
            )
        # tuples: the oracle is an immutable, hashable value
        frozen = tuple((int(start), tuple(alts)) for start, alts in self.patterns)
        object.__setattr__(self, "patterns", frozen)

    def strength(self, seqs: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Deterministic strength s(x) of each sequence (see :func:`motif_strength`)."""
        return motif_strength(seqs, self.s0, self.mult, self.patterns, self.compound)

    def sample(
        self, strength: torch.Tensor | np.ndarray, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """One NB test of each sequence of the given strengths (see :func:`sample_activity`)."""
        return sample_activity(strength, phi=self.phi, rng=rng)

    def pattern_matrix(self, seqs: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Boolean ``(n, n_patterns)``: which of this oracle's patterns each sequence carries."""
        return pattern_matrix(seqs, self.patterns)

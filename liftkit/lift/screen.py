"""Pooled screen simulator (LIFT eq. 5-6 and App. C).

A fixed number of cells each receive N_i ~ Poisson(MOI) sequences drawn iid from the library;
each sequence's activity is an independent NB draw with mean s(x) (the
:class:`~liftkit.lift.oracle.Oracle` of App. C), and the cell's
measurement is their sum ("total observable strength"). Only cells with ``y > threshold`` are
sorted and sequenced; the number ``n0`` of the other cells is all that is kept of them (the
input of the LeaVS correction, App. D).

The result is stored ragged in CSR form: ``cell_ptr`` delimits each sorted cell's entries in
``seq_idx``, which index the unique sequences ``tokens``. No per-cell Python objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from liftkit.lift.library import SequenceLibrary
from liftkit.lift.oracle import Oracle


@dataclass
class Screen:
    """A simulated (or measured) pooled screen, sorted cells only, in CSR form.

    Attributes
    ----------
    tokens
        ``(S, L)`` LongTensor: the unique sequences seen in sorted cells, encoded.
    cell_ptr
        ``(n_sorted + 1,)``: entries of cell ``i`` are ``seq_idx[cell_ptr[i]:cell_ptr[i+1]]``.
    seq_idx
        ``(nnz,)``: index into ``tokens`` of each (cell, sequence) entry.
    y
        ``(n_sorted,)`` float counts of the sorted cells.
    n0
        Number of cells not sorted (``y <= threshold``, including cells with no sequence).
    n_cells
        Total number of cells screened (``n_sorted + n0``).
    moi
        The MOI (Poisson mean of sequences per cell) used, or an estimate of it.
    threshold
        Sorting threshold: a cell is sequenced iff ``y > threshold``.
    seq_activity
        Optional ``(nnz,)`` ground-truth NB activity of each entry (simulations only).
    seq_strength
        Optional ``(S,)`` ground-truth strength s(x) of each unique sequence (simulations only).
    """

    tokens: torch.Tensor
    cell_ptr: torch.Tensor
    seq_idx: torch.Tensor
    y: torch.Tensor
    n0: int
    n_cells: int
    moi: float
    threshold: float = 0.0
    seq_activity: torch.Tensor | None = None
    seq_strength: torch.Tensor | None = None

    @property
    def n_sorted(self) -> int:
        """Number of sorted (sequenced) cells."""
        return int(self.y.shape[0])

    @property
    def nnz(self) -> int:
        """Number of (cell, sequence) entries."""
        return int(self.seq_idx.shape[0])

    def seqs_per_cell(self) -> torch.Tensor:
        """``(n_sorted,)`` number of sequences in each sorted cell."""
        return self.cell_ptr[1:] - self.cell_ptr[:-1]

    def pairs(self, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The conventional expansion: one ``(x_ij, y_i)`` pair per entry of ``cells`` (default:
        every sorted cell), in cell order.

        Returns ``(x, y)``: ``x`` indexes :attr:`tokens`, ``y`` is the pair's cell count.
        """
        if cells is None:
            return self.seq_idx, torch.repeat_interleave(self.y, self.seqs_per_cell())
        x = self.seq_idx[gather_entries(self.cell_ptr, cells)]
        return x, torch.repeat_interleave(self.y[cells], self.seqs_per_cell()[cells])

    def subset(self, cell_index: torch.Tensor | Sequence[int]) -> Screen:
        """Keep only the given sorted cells (in that order); sequences are re-indexed to the
        ones still used. ``n0``, ``n_cells``, ``moi`` and ``threshold`` are kept."""
        cells = torch.as_tensor(cell_index, dtype=torch.long, device=self.y.device).reshape(-1)
        if cells.numel() and (cells.min() < 0 or cells.max() >= self.n_sorted):
            raise ValueError(f"cell_index out of range for a screen of {self.n_sorted} cells")
        entries = gather_entries(self.cell_ptr, cells)
        counts = self.seqs_per_cell()[cells]
        ptr = torch.zeros(len(cells) + 1, dtype=torch.long, device=cells.device)
        ptr[1:] = torch.cumsum(counts, 0)
        used, inverse = torch.unique(self.seq_idx[entries], return_inverse=True)
        return replace(
            self,
            tokens=self.tokens[used],
            cell_ptr=ptr,
            seq_idx=inverse.reshape(-1),
            y=self.y[cells],
            seq_activity=None if self.seq_activity is None else self.seq_activity[entries],
            seq_strength=None if self.seq_strength is None else self.seq_strength[used],
        )

    def to(self, device: str | torch.device) -> Screen:
        """Move every tensor to ``device``."""
        kw = {
            k: getattr(self, k).to(device)
            for k in ("tokens", "cell_ptr", "seq_idx", "y", "seq_activity", "seq_strength")
            if getattr(self, k) is not None
        }
        return replace(self, **kw)

    def __repr__(self) -> str:
        return (
            f"Screen(n_cells={self.n_cells}, n_sorted={self.n_sorted}, n0={self.n0}, "
            f"unique_seqs={len(self.tokens)}, entries={self.nnz}, moi={self.moi}, "
            f"threshold={self.threshold})"
        )


def gather_entries(cell_ptr: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Entry positions of the given cells, concatenated in order (vectorised CSR gather)."""
    start = cell_ptr[cells]
    counts = cell_ptr[cells + 1] - start
    total = int(counts.sum())
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, device=cell_ptr.device) - torch.repeat_interleave(
        offsets, counts, output_size=total
    )
    return torch.repeat_interleave(start, counts, output_size=total) + within


def _check_screen_args(n_cells: int, moi: float, threshold: float) -> None:
    if not isinstance(n_cells, int | np.integer) or n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    if not np.isfinite(moi) or moi <= 0:
        raise ValueError(f"moi must be > 0 (the mean number of sequences per cell), got {moi!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")


def _simulate_chunk(
    library: SequenceLibrary,
    n: int,
    moi: float,
    oracle: Oracle,
    threshold: float,
    rng: np.random.Generator,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, int]:
    """``n`` cells (eq. 5, App. C): the sorted cells' entry tokens, sequence counts, cell
    counts and entry activities, and the number of unsorted cells."""
    counts = rng.poisson(moi, size=n)
    tokens = library.sample(int(counts.sum()), generator)
    act = oracle.sample(oracle.strength(tokens), rng=rng)
    cell = np.repeat(np.arange(n), counts)
    y = np.bincount(cell, weights=act, minlength=n)  # the cell reports the sum
    keep_cell = y > threshold
    keep_entry = torch.from_numpy(keep_cell[cell])
    n0 = int((~keep_cell).sum())
    return tokens[keep_entry], counts[keep_cell], y[keep_cell], act[keep_entry.numpy()], n0


def simulate_screen(
    library: SequenceLibrary,
    n_cells: int,
    moi: float,
    *,
    oracle: Oracle = Oracle(),  # noqa: B008 - a frozen (immutable) default
    threshold: float = 0.0,
    generator: torch.Generator | None = None,
    chunk_cells: int = 200_000,
) -> Screen:
    """Simulate a sorted pooled screen (LIFT eq. 5 and App. C).

    Parameters
    ----------
    library
        The library p(x) the sequences are drawn from.
    n_cells
        Number of cells screened (fixed across MOIs, as in the paper).
    moi
        Poisson mean of the number of sequences per cell (eq. 5). Must be > 0.
    oracle
        Strength s(x) of each sequence and its NB noise (patterns, s0, mult, compound, phi).
    threshold
        Cells with ``y > threshold`` are sorted and sequenced; lost from the paper (S: 0, i.e.
        "hits are non-zero counts", as in LeaVS).
    generator
        Torch generator (fixes the numbers; NumPy draws are seeded from it).
    chunk_cells
        Cells simulated at a time (bounds memory for paper-scale screens).

    Returns
    -------
    Screen
        Sorted cells only, with ``n0`` counting the others. Each entry's ground-truth activity
        and each unique sequence's strength are attached.
    """
    _check_screen_args(n_cells, moi, threshold)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    parts = [
        _simulate_chunk(library, min(chunk_cells, int(n_cells) - lo), moi, oracle, threshold,
                        rng, generator)
        for lo in range(0, int(n_cells), chunk_cells)
    ]
    tokens, kept_counts, kept_y, kept_act, n0s = zip(*parts, strict=True)
    counts = torch.from_numpy(np.concatenate(kept_counts)).long()
    uniq, inverse = torch.unique(torch.cat(tokens), dim=0, return_inverse=True)
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(counts, 0)
    return Screen(
        tokens=uniq,
        cell_ptr=ptr,
        seq_idx=inverse.reshape(-1),
        y=torch.from_numpy(np.concatenate(kept_y)).float(),
        n0=sum(n0s),
        n_cells=int(n_cells),
        moi=float(moi),
        threshold=float(threshold),
        seq_activity=torch.from_numpy(np.concatenate(kept_act)).float(),
        seq_strength=oracle.strength(uniq),
    )

"""Memory and time of the sparse path: model setup, one epoch and the data DE on a CSR screen.

A synthetic perturb-seq screen is built as CSR counts (``--density`` of the cells x genes
entries nonzero) and a CSR dosage matrix (one guide per cell, ``--pairs`` of the cells with
two, ``--controls`` with none). Timed stages: ``SAMSVAE(adata)`` (reading and checking counts
and dosages, encoder statistics, library sizes), ``model.train(max_epochs=1)`` and
``differential_expression(adata)``. Memory per stage is the peak of numpy/Python allocations
(``tracemalloc``; torch's own allocations, e.g. the network, are not in it) and the process's
peak resident set (``resource``, whole process: libraries and the screen included). The dense
matrices that the sparse path avoids are sized from the shapes.

    .venv/bin/python benchmarks/bench_sparse.py [--cells 100000] [--genes 2000] [--perts 1000]

Prints two markdown tables: the stages, and the dense sizes avoided.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
import tracemalloc
from collections.abc import Callable

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from liftkit.perturb import SAMSVAE, differential_expression
from liftkit.utils import set_seed


def synthetic_screen(
    n_cells: int, n_genes: int, n_perts: int, density: float, controls: float, pairs: float,
    seed: int = 0,
) -> ad.AnnData:
    """CSR counts (Poisson + 1 at ``density`` of the entries) and CSR dosages."""
    rng = np.random.default_rng(seed)
    k = max(1, round(density * n_genes))  # nonzeros per cell (duplicates merged)
    cols = np.sort(rng.integers(0, n_genes, (n_cells, k), dtype=np.int32), axis=1)
    vals = (rng.poisson(1.5, (n_cells, k)) + 1).astype(np.float32)
    indptr = np.arange(0, n_cells * k + 1, k, dtype=np.int64)
    x = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n_cells, n_genes))
    x.sum_duplicates()
    kind = rng.random(n_cells)
    guided = np.flatnonzero(kind >= controls)
    paired = np.flatnonzero(kind >= 1.0 - pairs)
    rows = np.concatenate([guided, paired])
    cols_d = np.concatenate([rng.integers(0, n_perts, len(guided)),
                             rng.integers(0, n_perts, len(paired))])
    d = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols_d)), shape=(n_cells, n_perts))
    d.data[:] = 1.0  # a pair that drew the same perturbation twice is one dose
    return ad.AnnData(x, obsm={"dosage": d})


def measure(fn: Callable[[], object]) -> tuple[object, float, float, float]:
    """``fn()``, its wall seconds, its numpy/Python peak (MB) and the process peak RSS (MB)."""
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out, wall, peak / 1e6, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--perts", type=int, default=1000)
    ap.add_argument("--density", type=float, default=0.1, help="nonzero share of the counts")
    ap.add_argument("--controls", type=float, default=0.1)
    ap.add_argument("--pairs", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, g, t = args.cells, args.genes, args.perts
    t0 = time.perf_counter()
    adata = synthetic_screen(n, g, t, args.density, args.controls, args.pairs)
    x, d = adata.X, adata.obsm["dosage"]
    print(f"screen: {n} cells x {g} genes x {t} perturbations, counts nnz {x.nnz} "
          f"({x.nnz / (n * g):.1%}), dosage nnz {d.nnz}; built in "
          f"{time.perf_counter() - t0:.1f} s; {args.threads} torch thread(s), "
          f"{platform.machine()}, torch {torch.__version__}")
    # imports (torch's optimiser pulls in more on first use) and numba compilation outside
    # the measured stages
    tiny = synthetic_screen(200, 20, 5, 0.3, 0.2, 0.1)
    SAMSVAE(tiny, layer=None, device="cpu").train(2, batch_size=64, show_progress=False)
    differential_expression(tiny, layer=None)
    set_seed(0)
    tracemalloc.start()
    model, t_setup, m_setup, r_setup = measure(lambda: SAMSVAE(
        adata, layer=None, device="cpu", seed=0, n_latent=args.latent, hidden=args.hidden))
    steps = max(1, n // args.batch)
    _, t_epoch, m_epoch, r_epoch = measure(lambda: model.train(
        max_epochs=1, batch_size=args.batch, show_progress=False))
    de, t_de, m_de, r_de = measure(lambda: differential_expression(adata, layer=None))
    tracemalloc.stop()
    csr_mb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 1e6
    print("\n| stage | wall s | numpy peak MB | process peak RSS MB |\n|---|---|---|---|")
    print(f"| model setup (`SAMSVAE(adata)`) | {t_setup:.1f} | {m_setup:.0f} | {r_setup:.0f} |")
    print(f"| 1 epoch ({steps} steps of {args.batch}) | {t_epoch:.1f} | {m_epoch:.0f} | "
          f"{r_epoch:.0f} |")
    print(f"| DE ({de.shape[0]} perturbations) | {t_de:.1f} | {m_de:.0f} | {r_de:.0f} |")
    print(f"\nThe screen's CSR counts occupy {csr_mb:.0f} MB. Dense matrices the sparse path "
          "does not form:\n\n| matrix | shape | dtype | MB |\n|---|---|---|---|")
    for name, shape, size in [
        ("counts", (n, g), 4), ("dosage (as read before: float64, then float32)", (n, t), 8),
        ("dosage", (n, t), 4), ("log-normalised counts (DE)", (n, g), 8),
    ]:
        print(f"| {name} | {shape[0]} x {shape[1]} | float{size * 8} | "
              f"{shape[0] * shape[1] * size / 1e6:.0f} |")


if __name__ == "__main__":
    main()

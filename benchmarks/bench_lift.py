"""Benchmark: LIFT training throughput (sequences/s, cells/s) at MOI 1 and 10.

Compares, in the same run and on the same network and minibatches, the vectorised pooled
forward/backward of :func:`liftkit.lift.objectives.pooled_mean` (flatten, dedupe, one network
call, ``index_add``) with a straightforward per-cell loop
(:func:`liftkit.lift.objectives.pooled_mean_loop`),
and reports peak memory (resident set size). Prints a table; not a test.

    .venv/bin/python benchmarks/bench_lift.py [--steps 30] [--device auto]
    .venv/bin/python benchmarks/bench_lift.py --converged [--replicates 1]

``--converged`` instead times whole fits trained to convergence at the Figure 2 chapter's default
settings (6,000 cells, OLGA pool, 16-channel CNN, minibatches of 256 cells, budget 300 epochs,
early stopping with patience 5): CPU seconds (``time.process_time``, one thread) per fit, epochs
run, and whether the budget bound the fit, at each MOI, for LIFT and conventional training.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import time

import torch

from liftkit import resolve_device, set_seed
from liftkit.lift.library import SiteIndependentLibrary
from liftkit.lift.nets import SeqCNN
from liftkit.lift.objectives import pooled_mean, pooled_mean_loop
from liftkit.lift.screen import simulate_screen
from liftkit.lift.train import fit_lift
from liftkit.stats import nb_log_prob


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(net, opt, screen, batches, loop: bool) -> float:
    phi = torch.tensor(2.0)
    t0 = time.perf_counter()
    for cells in batches:
        mean = pooled_mean_loop(net, screen, cells) if loop else pooled_mean(net, screen, cells)[0]
        loss = -nb_log_prob(screen.y[cells], mean, phi).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def converged(replicates: int, device: str) -> None:
    """CPU seconds per converged fit at each MOI (the chapter's default profile)."""
    from liftkit.lift.experiment import moi_experiment
    from liftkit.lift.library import make_library

    torch.set_num_threads(1)
    lib = make_library("olga", pool_size=20000, seed=0)
    fit_kw = dict(epochs=300, batch_size=256, lr=1e-2, n_mc=128, patience=5, val_min=100,
                  mc_pool=20000, net_kw=dict(channels=16, hidden=16))
    out = moi_experiment(lib, (0.1, 0.3, 1.0, 3.0, 10.0), 6000, replicates, n_test=50000,
                         fit_kw=fit_kw, seed=0, device=device)
    t = out.table.groupby(["moi", "method"]).agg(
        sorted_cells=("n_sorted", "median"), cpu_s=("cpu_seconds", "median"),
        cpu_s_max=("cpu_seconds", "max"), epochs=("epochs_run", "median"),
        bound=("bound", "sum"), fits=("bound", "size"))
    print(f"# converged fits ({platform.machine()}, 1 thread, device {device}, "
          f"{replicates} replicate(s)); total CPU s {out.table.cpu_seconds.sum():.0f}")
    print(t.round(1).to_string())


def paper_scale(device: str, steps: int = 8) -> None:
    """CPU seconds per step and per epoch of LIFT at the chapter's ``paper`` profile (1e5 cells,
    site library, 64 channels, minibatches of 512 cells), from ``steps`` timed steps."""
    torch.set_num_threads(1)
    lib = SiteIndependentLibrary.from_olga(20000)
    print(f"# paper-profile LIFT steps ({platform.machine()}, 1 thread, device {device})")
    for moi in (1.0, 10.0):
        screen = simulate_screen(lib, 100_000, moi, generator=torch.Generator().manual_seed(0))
        fit_lift(screen, lib, steps=2, batch_size=512, n_mc=512, eval_every=10**9,
                 net_kw=dict(channels=64, hidden=64), show_progress=False, device=device)
        res = fit_lift(screen, lib, steps=steps, batch_size=512, n_mc=512, eval_every=10**9,
                       net_kw=dict(channels=64, hidden=64), show_progress=False, device=device)
        per_step = res.cpu_seconds / steps
        per_epoch = per_step * math.ceil(0.9 * screen.n_sorted / 512)
        print(f"MOI {moi:g}: {screen.n_sorted} sorted cells, {per_step:.2f} CPU s/step, "
              f"{per_epoch:.0f} CPU s/epoch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="minibatch steps per measurement")
    ap.add_argument("--loop-steps", type=int, default=3, help="steps for the per-cell loop")
    ap.add_argument("--batch", type=int, default=128, help="cells per minibatch")
    ap.add_argument("--n-cells", type=int, default=4000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    ap.add_argument("--converged", action="store_true", help="time fits trained to convergence")
    ap.add_argument("--replicates", type=int, default=1, help="replicates for --converged")
    ap.add_argument("--paper", action="store_true", help="time steps at the paper profile")
    args = ap.parse_args()
    if args.paper:
        paper_scale(args.device)
        return
    if args.converged:
        converged(args.replicates, args.device)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    gen = set_seed(0)
    lib = SiteIndependentLibrary.from_olga(20000)
    rows = []
    for moi in (1.0, 10.0):
        screen = simulate_screen(lib, args.n_cells, moi, generator=gen).to(dev)
        net = SeqCNN(max_len=lib.max_len).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        batches = [torch.randint(0, screen.n_sorted, (args.batch,), generator=gen).to(dev)
                   for _ in range(max(args.steps, args.loop_steps))]
        seqs = [int((screen.cell_ptr[b + 1] - screen.cell_ptr[b]).sum()) for b in batches]
        time_steps(net, opt, screen, batches[:2], loop=False)  # warm-up
        t_vec = time_steps(net, opt, screen, batches[: args.steps], loop=False)
        t_loop = time_steps(net, opt, screen, batches[: args.loop_steps], loop=True)
        vec_seq = sum(seqs[: args.steps]) / t_vec
        loop_seq = sum(seqs[: args.loop_steps]) / t_loop
        # end-to-end fit_lift (LeaVS Monte Carlo, validation and early stopping included)
        res = fit_lift(screen, lib, steps=args.steps, batch_size=args.batch, eval_every=10**9,
                       val_frac=0.0, show_progress=False, device=dev)
        rows.append((moi, screen.n_sorted, vec_seq, args.batch * args.steps / t_vec, loop_seq,
                     vec_seq / loop_seq, res.sequences_per_second, res.cells_per_second))
    print(f"# LIFT training throughput ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {dev}, batch {args.batch} cells)")
    print(f"{'MOI':>5} {'sorted':>7} {'vec seq/s':>10} {'vec cells/s':>11} {'loop seq/s':>10} "
          f"{'speed-up':>8} {'fit seq/s':>9} {'fit cells/s':>11}")
    for r in rows:
        print(f"{r[0]:>5.1f} {r[1]:>7d} {r[2]:>10.0f} {r[3]:>11.0f} {r[4]:>10.0f} {r[5]:>7.1f}x "
              f"{r[6]:>9.0f} {r[7]:>11.0f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MiB")
    if dev.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

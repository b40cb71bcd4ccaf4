"""Benchmark: LIFT training throughput (sequences/s, cells/s) at MOI 1 and 10.

Compares, in the same run and on the same network and minibatches, the vectorised pooled
forward/backward of :func:`liftkit.lift.objectives.pooled_mean` (flatten, dedupe, one network
call, ``index_add``) with a straightforward per-cell loop
(:func:`liftkit.lift.objectives.pooled_mean_loop`),
and reports peak memory (resident set size). Prints a table; not a test.

    .venv/bin/python benchmarks/bench_lift.py [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="minibatch steps per measurement")
    ap.add_argument("--loop-steps", type=int, default=3, help="steps for the per-cell loop")
    ap.add_argument("--batch", type=int, default=128, help="cells per minibatch")
    ap.add_argument("--n-cells", type=int, default=4000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    args = ap.parse_args()
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

"""Training-step time of SAMS-VAE at the paper's Replogle configuration (not a test).

Config (SAMS-VAE sec. 4.1, App. A.3): 1,187 genes, 722 perturbations, latent 100, one hidden
layer of 400, batch 512, 5 particles, Adam. One step = forward (globals for all 722
perturbations, encoder, decoder, NB likelihood), backward and optimiser update.

    .venv/bin/python benchmarks/bench_perturb.py [--steps 10] [--device auto] [--threads 1 2]

Prints a markdown table: seconds per step (median over timed steps) per model x guide.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from liftkit import resolve_device, set_seed
from liftkit.perturb.modules import (
    ConditionalVAEModule,
    CPAVAEModule,
    PerturbModule,
    SAMSVAEModule,
)
from liftkit.perturb.objectives import negative_elbo

CONFIG = {"n_genes": 1187, "n_perts": 722, "n_latent": 100, "hidden": 400, "batch": 512, "P": 5}


#: Timed rows: (label, module class, guide, mask options).
ROWS = [
    ("SAMS-VAE", SAMSVAEModule, "corr", {"alpha": 0.001}),
    ("SAMS-VAE", SAMSVAEModule, "mf", {"alpha": 0.001}),
    ("CPA-VAE", CPAVAEModule, "corr_basal", {}),
    ("Conditional VAE", ConditionalVAEModule, "mf", {}),
]


def time_step(
    cls: type[PerturbModule], guide: str, kw: dict, steps: int, device: torch.device
) -> float:
    """Median seconds of one training step of ``cls`` at :data:`CONFIG`."""
    set_seed(0)
    c = CONFIG
    mod = cls(c["n_genes"], c["n_perts"], c["n_latent"], c["hidden"], guide=guide, **kw)
    mod.to(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.poisson(torch.full((c["batch"], c["n_genes"]), 1.5), generator=g).to(device)
    d = torch.zeros(c["batch"], c["n_perts"])
    d[torch.arange(c["batch"]), torch.randint(c["n_perts"], (c["batch"],), generator=g)] = 1.0
    d = d.to(device)
    n_t = torch.full((c["n_perts"],), 164.0, device=device)  # ~118k cells / 722
    mod.set_input_stats(x)
    opt = torch.optim.Adam(mod.parameters(), lr=3e-4, weight_decay=1e-6, fused=True)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = negative_elbo(mod, x, d, n_t, c["P"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to time"
    )
    args = ap.parse_args()
    device = resolve_device(args.device)
    threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    print(
        f"device={device} torch={torch.__version__} cpu={platform.processor() or platform.machine()}"
    )
    print(f"config: {CONFIG}")
    if hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.2f} (other processes slow a shared CPU)")
    print("| model | guide | threads | s / step |")
    print("|---|---|---|---|")
    for label, cls, guide, kw in ROWS:
        for n in threads:
            torch.set_num_threads(n)
            s = time_step(cls, guide, kw, args.steps, device)
            print(f"| {label} | {guide} | {n} | {s:.3f} |", flush=True)


if __name__ == "__main__":
    main()

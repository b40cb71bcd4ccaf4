"""Time and peak memory of the combinations chapter on a measured screen, offline.

The chapter ``book/lifted_perturbseq.md`` run with ``-p dataset norman2019`` loads the scPerturb
file of Norman et al. 2019 (``load_scperturb``: QC, highly variable genes, sparse dosages),
splits its measured pairs, fits the models and scores them. Without network access this script
stands a generated file in the provider's format (``liftkit.data.fixtures.norman_like_screen``)
in for the download: it is written to a temporary cache, registered under a copy of the
repository's ``norman2019`` manifest entry with its own md5, and the chapter is run on it at the
given profile, one size at a time, in a fresh process with one thread. Reported: wall time, CPU
time of the process and its children (the notebook kernel), and the peak resident set of the
kernel (``resource``'s ``ru_maxrss`` of the children), next to the cells x genes of the file,
so that a reader can scale the cost to the real file (Norman: about 111,000 cells x 5,000 genes).

    .venv/bin/python benchmarks/bench_realdata.py [--sizes 5000x500 20000x2000] [--profile smoke]

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from liftkit.data.fixtures import norman_like_screen, stage_download
from liftkit.utils import repo_root

# Run in a fresh interpreter per size, so that ru_maxrss of the children is this size's kernel.
CHILD = """
import json, resource, sys, time
from liftkit.companion.runner import run_chapter
chapter, out, profile = sys.argv[1:4]
t0, c0 = time.perf_counter(), time.process_time()
run_chapter(chapter, out, {"profile": profile, "dataset": "norman2019"})
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": time.perf_counter() - t0,
                  "cpu_s": time.process_time() - c0 + kids.ru_utime + kids.ru_stime,
                  "kernel_peak_gb": kids.ru_maxrss / 2**20}))
"""


def measure(n_cells: int, n_genes: int, n_targets: int, profile: str, seed: int
            ) -> dict[str, float]:
    """One chapter run on a generated file of ``n_cells`` x ``n_genes``."""
    with tempfile.TemporaryDirectory() as tmp:
        screen = norman_like_screen(n_cells=n_cells, n_genes=n_genes, n_targets=n_targets,
                                    seed=seed)
        env = {**os.environ, **stage_download(screen, tmp),
               "LIFTKIT_CLAIMS_DIR": str(Path(tmp) / "claims"), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        chapter = repo_root() / "book" / "lifted_perturbseq.md"
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(chapter), str(Path(tmp) / "run.ipynb"), profile],
            env=env, capture_output=True, text=True, check=False,
        )
        if done.returncode:
            raise RuntimeError(f"the chapter failed on {n_cells} x {n_genes}:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["5000x500", "20000x2000"],
                        help="cells x genes of the generated files")
    parser.add_argument("--profile", default="smoke", help="the chapter's profile")
    parser.add_argument("--targets", type=int, default=12,
                        help="activated genes (12: 57 measured pairs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, profile {args.profile}, "
          f"{args.targets} targets, one thread\n")
    print("| cells x genes | entries | wall s | CPU s | kernel peak GB |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        n_cells, n_genes = (int(v) for v in size.lower().split("x"))
        r = measure(n_cells, n_genes, args.targets, args.profile, args.seed)
        print(f"| {n_cells:,} x {n_genes:,} | {n_cells * n_genes:.1e} | {r['wall_s']:.0f} "
              f"| {r['cpu_s']:.0f} | {r['kernel_peak_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

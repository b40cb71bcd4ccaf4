"""Files in a provider's format, generated: offline stand-ins for the downloads of the manifest.

They let the tests and ``benchmarks/bench_realdata.py`` run the real-data path of the book
(``load_scperturb`` and the chapters' ``-p dataset norman2019``) without network access, at any
size: :func:`stage_download` puts a generated file where the manifest's download would be. They are not models of the biology: effects are planted so that a test can see them.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from liftkit.data.download import ENV_CACHE
from liftkit.data.manifest import ENV_MANIFEST
from liftkit.utils import repo_root


def norman_like_screen(
    n_cells: int = 1200, n_genes: int = 60, n_targets: int = 8, seed: int = 0
) -> ad.AnnData:
    """A Norman-style CRISPRa screen in scPerturb's format.

    Raw integer counts (CSR ``X``), gene symbols as var names, obs ``perturbation`` (pairs joined
    by ``_``, controls ``control``), ``nperts``, ``perturbation_type``, ``celltype``, ``ncounts``,
    ``ngenes``. Targets ``T01..`` are genes of the screen; each activates itself (log effect 2)
    and moves three other genes (log effects of +-1.2); a pair's effects add in log space.
    Every pair of the first ``n_targets - 1`` targets is measured; the last target is measured
    only in pairs (never alone), and a few cells carry three guides. Library sizes are
    log-normal around ``20 * n_genes``.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the count matrix (``n_genes > n_targets + 3``).
    n_targets
        Number of activated genes (at least 3).
    seed
        Seed of the generator.

    Returns
    -------
    anndata.AnnData
        Cells x genes, as :func:`liftkit.data.perturbseq.load_scperturb` reads it.

    Examples
    --------
    >>> a = norman_like_screen(n_cells=50, n_genes=20, n_targets=4)
    >>> a.shape, sorted(a.obs["nperts"].unique().tolist())
    ((50, 20), [0, 1, 2, 3])
    """
    if n_targets < 3 or n_genes <= n_targets + 3:
        raise ValueError(
            f"norman_like_screen needs n_targets >= 3 and n_genes > n_targets + 3, got "
            f"n_targets={n_targets}, n_genes={n_genes}"
        )
    rng = np.random.default_rng(seed)
    targets = [f"T{t:02d}" for t in range(1, n_targets + 1)]
    genes = [*targets, *(f"G{j:03d}" for j in range(n_genes - n_targets))]
    pairs = [f"{a}_{b}" for a, b in itertools.combinations(targets[:-1], 2)]
    pairs += [f"{targets[0]}_{targets[-1]}", f"{targets[1]}_{targets[-1]}"]
    pool = ["control"] * 6 + targets[:-1] * 2 + pairs + [f"{targets[0]}_{targets[1]}_{targets[2]}"]
    labels = np.array(pool, dtype=object)[rng.integers(len(pool), size=n_cells)]
    log_effect = np.zeros((len(targets), n_genes))
    for t in range(len(targets)):  # a few targets: the planted effects, not a hot path
        log_effect[t, t] = 2.0
        log_effect[t, rng.choice(np.arange(n_targets, n_genes), 3, replace=False)] = rng.choice(
            [-1.2, 1.2], 3)
    members = pd.Series(labels).str.split("_")
    dose = np.stack([members.map(lambda m, t=t: t in m).to_numpy(float) for t in targets], 1)
    rate = rng.gamma(2.0, 1.0, n_genes)[None] * np.exp(dose @ log_effect)
    lib = rng.lognormal(np.log(20.0 * n_genes), 0.2, (n_cells, 1))
    x = sp.csr_matrix(rng.poisson(rate / rate.sum(1, keepdims=True) * lib).astype(np.float32))
    obs = pd.DataFrame(
        {"perturbation": pd.Categorical(labels),
         "nperts": np.where(labels == "control", 0, members.str.len()),
         "perturbation_type": "CRISPRa", "celltype": "K562",
         "ncounts": np.asarray(x.sum(1)).ravel(), "ngenes": x.getnnz(axis=1)},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))


def stage_download(
    adata: ad.AnnData, folder: str | Path, name: str = "norman2019",
    params: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Stand ``adata`` in for the download of manifest entry ``name``, offline.

    Writes ``adata`` under ``folder/cache`` with the entry's file name, and ``folder/manifest.yaml``
    holding a copy of the repository's entry whose checksum is that file's md5 (so it is found
    verified in the cache and never fetched: its URL is unreachable) and whose loader parameters
    are updated with ``params``.

    Parameters
    ----------
    adata
        The file's content, e.g. :func:`norman_like_screen`.
    folder
        An existing folder to stage in.
    name
        The manifest entry to stand in for.
    params
        Loader parameters to override (e.g. smaller QC thresholds for a small file).

    Returns
    -------
    dict
        The environment variables that point liftkit at the staged manifest and cache.

    Examples
    --------
    >>> env = stage_download(norman_like_screen(), tmp)  # doctest: +SKIP
    >>> sorted(env)  # doctest: +SKIP
    ['LIFTKIT_DATA_DIR', 'LIFTKIT_MANIFEST']
    """
    folder = Path(folder)
    doc = yaml.safe_load((repo_root() / "data_manifest.yaml").read_text())
    entry = next(e for e in doc["datasets"] if e["name"] == name)
    cache = folder / "cache"
    cache.mkdir()
    path = cache / entry["filename"]
    adata.write_h5ad(path)
    entry.update(urls=["http://127.0.0.1:9/unreachable.h5ad"],
                 checksum="md5:" + hashlib.md5(path.read_bytes()).hexdigest(),
                 params={**entry["params"], **(params or {})})
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"datasets": [entry]}))
    return {ENV_MANIFEST: str(manifest), ENV_CACHE: str(cache)}

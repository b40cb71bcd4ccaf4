"""Real perturb-seq through the manifest, offline: a small file in scPerturb's format (same obs
columns and label conventions, synthetic counts) is served on 127.0.0.1 under its recorded md5,
fetched, verified, loaded and preprocessed, and trained on briefly."""

import hashlib
import http.server
import threading
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from liftkit import data
from liftkit.data import perturbseq

# Genes with a planted effect: an activated gene goes up (CRISPRa, as in Norman 2019) and moves
# two downstream genes; "NULL*" genes are perturbed but change nothing.
EFFECTS = {"KLF1": ("G01", "G02"), "CEBPE": ("G03", "G04"), "SPI1": ("G05", "G06")}
NULLS = ("NULL1", "NULL2")


def scperturb_fixture(n_cells=600, n_genes=60, kind="norman", seed=0):
    """Cells x genes AnnData in scPerturb's format: raw integer counts in a CSR ``X``, gene
    symbols as var names, obs ``perturbation`` (combinations joined by '_'), ``nperts``,
    ``perturbation_type``, ``celltype``, ``ncounts``, ``ngenes``, ``guide_id``."""
    rng = np.random.default_rng(seed)
    targets = [*EFFECTS, *NULLS]
    genes = [*targets, *(f"G{j:02d}" for j in range(1, n_genes - len(targets) + 1))]
    if kind == "norman":
        pool = ["control", *targets, "KLF1_CEBPE", "CEBPE_SPI1", "KLF1_SPI1"]
    else:  # Replogle: one gene per cell, controls non-targeting
        pool = ["non-targeting", *targets]
    labels = np.array(pool, dtype=object)[np.arange(n_cells) % len(pool)]
    base = rng.gamma(2.0, 1.0, n_genes)
    rate = np.tile(base, (n_cells, 1))
    col = {g: j for j, g in enumerate(genes)}
    for i, label in enumerate(labels):
        for gene in label.split("_"):
            if gene in EFFECTS:
                rate[i, col[gene]] *= 8.0
                rate[i, [col[g] for g in EFFECTS[gene]]] *= 4.0
    lib = rng.lognormal(np.log(30.0), 0.2, (n_cells, 1))
    counts = rng.poisson(rate / rate.sum(1, keepdims=True) * n_genes * lib).astype(np.float32)
    x = sp.csr_matrix(counts)
    controls = {"control", "non-targeting"}
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(labels),
            "nperts": [0 if lab in controls else len(lab.split("_")) for lab in labels],
            "perturbation_type": "CRISPRa" if kind == "norman" else "CRISPRi",
            "celltype": "K562",
            "ncounts": np.asarray(x.sum(1)).ravel(),
            "ngenes": x.getnnz(axis=1),
            "guide_id": [f"{lab}_sg" for lab in labels],
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))


# Loader settings for a fixture this small (the manifest's defaults are for 100k-cell files).
SMALL = {"min_genes": 5, "min_cells": 3, "n_top_genes": 20}


@pytest.fixture
def norman_file(tmp_path):
    path = tmp_path / "served" / "NormanWeissman2019_filtered.h5ad"
    path.parent.mkdir()
    scperturb_fixture().write_h5ad(path)
    return path


@pytest.fixture
def served(norman_file):
    """A loopback HTTP server (127.0.0.1 only) serving the fixture's folder."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(norman_file.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", norman_file
    httpd.shutdown()


def repo_entry(root, name):
    """The repository manifest's entry ``name`` as a dict (the real url, checksum and params)."""
    doc = yaml.safe_load((root / "data_manifest.yaml").read_text())
    return next(e for e in doc["datasets"] if e["name"] == name)


def served_manifest(tmp_path, root, url, checksum, params=SMALL):
    """The repository's norman2019 entry with its url pointing at the local server."""
    entry = repo_entry(root, "norman2019")
    entry.update(urls=[url], checksum=checksum, params={**entry["params"], **params})
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"datasets": [entry]}))
    return path


def md5(path):
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def test_manifest_lists_real_datasets_with_provider_checksums(root):
    table = data.list_datasets(root / "data_manifest.yaml").set_index("name")
    expected = {
        "norman2019": "md5:c870e6967d91c017d9da827bab183cd6",
        "replogle2022_k562_essential": "md5:d8cba17576d1a8afc0f7d71b79cad0f7",
        "replogle2022_rpe1": "md5:cc7f1ec50aeb3a3e1b4a6cfa713d80fa",
    }
    for name, checksum in expected.items():
        assert table.loc[name, "checksum"] == checksum
        entry = data.get_entry(name, root / "data_manifest.yaml")
        assert entry.urls[0].startswith("https://zenodo.org/record/7041849/files/")
        assert entry.loader == "liftkit.data.perturbseq:load_scperturb"
        assert "perturbation" in entry.obs_columns and entry.unverified
    assert data.get_entry("norman2019", root / "data_manifest.yaml").size == 698_680_199


def test_manifest_checksum_field_errors(tmp_path):
    entry = {"name": "x", "kind": "remote", "format": "h5ad", "urls": ["https://h/x.h5ad"],
             "description": "d", "license": "l", "citation": "c"}
    for bad in ("md5:123", "crc32:" + "0" * 8, "c870e6967d91c017d9da827bab183cd6"):
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"datasets": [{**entry, "checksum": bad}]}))
        with pytest.raises(ValueError, match="must be 'md5:<32 hex digits>'"):
            data.read_manifest(path)
    path.write_text(yaml.safe_dump(
        {"datasets": [{**entry, "checksum": "md5:" + "0" * 32, "sha256": "0" * 64}]}))
    with pytest.raises(ValueError, match="both sha256 and checksum"):
        data.read_manifest(path)


def test_fetch_verifies_md5_and_load_returns_model_ready_anndata(tmp_path, root, served,
                                                                  monkeypatch):
    url, path = served
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    manifest = served_manifest(tmp_path, root, f"{url}/{path.name}", md5(path))
    local = data.fetch("norman2019", path=manifest)
    assert local.name == "NormanWeissman2019_filtered.h5ad"
    assert local.read_bytes() == path.read_bytes()
    adata = data.load("norman2019", path=manifest)
    counts = adata.layers["counts"]
    assert sp.isspmatrix_csr(counts) and sp.issparse(adata.X)
    dosage = adata.obsm["dosage"]
    assert isinstance(dosage, pd.DataFrame)
    assert all(isinstance(t, pd.SparseDtype) for t in dosage.dtypes)
    assert sorted(dosage.columns) == sorted([*EFFECTS, *NULLS])
    # independent expectation: the fixture's labels, re-parsed by hand
    raw = ad.read_h5ad(path)[adata.obs_names]
    expected = {"control": set(), "KLF1_CEBPE": {"KLF1", "CEBPE"}}
    for provider, genes in expected.items():
        rows = dosage.to_numpy()[(raw.obs["perturbation"] == provider).to_numpy()]
        assert {dosage.columns[j] for j in np.flatnonzero(rows[0])} == genes
        assert (rows == rows[0]).all()
    assert (adata.obs.loc[raw.obs["perturbation"] == "control", "perturbation"] == "control").all()
    assert set(adata.obs["perturbation"]) >= {"control", "CEBPE+KLF1", "KLF1"}
    # counts are the file's counts for the kept genes (no normalisation leaked into the layer)
    kept = raw[:, adata.var_names].X.toarray()
    np.testing.assert_array_equal(counts.toarray(), kept)
    np.testing.assert_allclose(adata.obs["library_size"], kept.sum(1))
    # perturbed genes are kept on top of the highly variable ones
    assert set(dosage.columns) <= set(adata.var_names)


def test_load_params_override_manifest_defaults(tmp_path, root, served, monkeypatch):
    url, path = served
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    manifest = served_manifest(tmp_path, root, f"{url}/{path.name}", md5(path))
    small = data.load("norman2019", path=manifest, n_top_genes=10, include_targets=False)
    assert small.n_vars == 10
    steps = small.uns["preprocessing"]
    assert steps["step"][0] == "read" and steps["cells"][0] == 600


def test_fetch_md5_mismatch_leaves_nothing(tmp_path, root, served, monkeypatch):
    url, path = served
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(cache))
    manifest = served_manifest(tmp_path, root, f"{url}/{path.name}", "md5:" + "0" * 32)
    with pytest.raises(RuntimeError, match=r"checksum mismatch .*md5:0{32}") as info:
        data.load("norman2019", path=manifest)
    assert "\n" not in str(info.value)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_fetch_truncated_download_leaves_nothing(tmp_path, root, served, monkeypatch):
    url, path = served
    checksum = md5(path)  # recorded for the whole file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the server sends half
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(cache))
    manifest = served_manifest(tmp_path, root, f"{url}/{path.name}", checksum)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        data.fetch("norman2019", path=manifest)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_truncated_file_is_a_one_line_error(norman_file):
    norman_file.write_bytes(norman_file.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        perturbseq.load_scperturb(norman_file, **SMALL)
    assert "\n" not in str(info.value)


def test_wrong_columns_are_a_one_line_error(tmp_path, root, monkeypatch):
    adata = scperturb_fixture(n_cells=60)
    adata.obs = adata.obs.rename(columns={"perturbation": "condition"})
    path = tmp_path / "served" / "NormanWeissman2019_filtered.h5ad"
    path.parent.mkdir()
    adata.write_h5ad(path)
    manifest = served_manifest(tmp_path, root, "http://127.0.0.1:9/x.h5ad", md5(path))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / path.name).write_bytes(path.read_bytes())  # a verified copy is already cached
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(cache))
    with pytest.raises(ValueError, match=r"norman2019 lacks obs column\(s\) \['perturbation'\]"):
        data.load("norman2019", path=manifest)


def test_labels_disagreeing_with_nperts_are_refused(tmp_path):
    adata = scperturb_fixture(n_cells=60)
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str).str.replace("_", "+")
    path = tmp_path / "plus.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ValueError, match="nperts different .* check separator"):
        perturbseq.load_scperturb(path, **SMALL)
    loaded = perturbseq.load_scperturb(path, separator="+", **SMALL)
    assert "CEBPE+KLF1" in set(loaded.obs["perturbation"])


def test_normalised_counts_are_refused(tmp_path):
    adata = scperturb_fixture(n_cells=60)
    adata.X = adata.X.multiply(1.0 / adata.X.sum(1)).tocsr()
    path = tmp_path / "norm.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ValueError, match="non-negative integers"):
        perturbseq.load_scperturb(path, **SMALL)


def test_dosage_parsing():
    d, names, labels = perturbseq.scperturb_dosage(
        ["control", "B_A", "A", "ctrl_B"], control_labels=["control", "ctrl"]
    )
    assert names == ["A", "B"]
    assert d.toarray().tolist() == [[0, 0], [1, 1], [1, 0], [0, 1]]
    assert list(labels) == ["control", "A+B", "A", "B"]
    with pytest.raises(ValueError, match="no control cells"):
        perturbseq.scperturb_dosage(["A", "B"])
    single, names, _ = perturbseq.scperturb_dosage(["A_1", "non-targeting"], separator=None,
                                                    control_labels=["non-targeting"])
    assert names == ["A_1"] and single.toarray().tolist() == [[1], [0]]


def test_replogle_loader_finds_the_strong_perturbations(tmp_path):
    path = tmp_path / "ReplogleWeissman2022_rpe1.h5ad"
    scperturb_fixture(n_cells=700, kind="replogle", seed=1).write_h5ad(path)
    adata = perturbseq.load_scperturb(
        path, separator=None, control_labels=["control", "non-targeting"], min_de_genes=2,
        **SMALL,
    )
    # only the planted effects survive; the perturbed-but-inert genes are dropped with their cells
    assert sorted(adata.obsm["dosage"].columns) == sorted(EFFECTS)
    assert set(adata.obs["perturbation"]) == {"control", *EFFECTS}
    assert (adata.obs["n_guides"] == adata.obsm["dosage"].sum(1).to_numpy()).all()
    for gene, downstream in EFFECTS.items():
        assert {gene, *downstream} <= set(adata.var_names)


def test_replogle_gene_selection_keeps_the_genes_of_the_perturbations(tmp_path):
    """gene_selection="de": the genes DE in a kept perturbation (SAMS-VAE sec. 4.1), checked
    against the planted effects and a hand log-normalisation of the fixture's counts."""
    # 400 genes: the planted effects barely move the other genes' share of the library
    fixture = scperturb_fixture(n_cells=700, n_genes=400, kind="replogle", seed=1)
    path = tmp_path / "ReplogleWeissman2022_rpe1.h5ad"
    fixture.write_h5ad(path)
    adata = perturbseq.load_scperturb(
        path, separator=None, control_labels=["control", "non-targeting"], min_de_genes=2,
        gene_selection="de", include_targets=False, **SMALL,
    )
    genes = set(adata.var_names)
    planted = {g for gene, down in EFFECTS.items() for g in (gene, *down)}
    assert planted <= genes < set(fixture.var_names)
    assert adata.uns["preprocessing"]["gene_selection"] == "de"
    # every kept gene moves by more than min_effect (0.1) in some kept group, by hand
    x = fixture[adata.obs_names].X.toarray().astype(np.float64)
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    label = adata.obs["perturbation"].to_numpy()
    control = y[label == "control"].mean(0)
    effect = np.stack([np.abs(y[label == g].mean(0) - control) for g in EFFECTS]).max(0)
    moved = set(fixture.var_names[effect > 0.1])
    assert genes <= moved
    with pytest.raises(ValueError, match="gene_selection must be 'hvg' or 'de'"):
        perturbseq.load_scperturb(path, separator=None, gene_selection="all",
                                  control_labels=["control", "non-targeting"], **SMALL)


def test_min_cells_per_perturbation_drops_the_cells_too(tmp_path):
    adata = scperturb_fixture(n_cells=120)
    keep = ~((adata.obs["perturbation"] == "NULL1").to_numpy() & (np.arange(120) > 10))
    path = tmp_path / "rare.h5ad"
    adata[keep].copy().write_h5ad(path)  # NULL1 keeps one cell
    loaded = perturbseq.load_scperturb(path, min_cells_per_perturbation=2, **SMALL)
    assert "NULL1" not in loaded.obsm["dosage"].columns
    assert loaded.n_obs == int(keep.sum()) - 1


def test_norman_ood_split_holds_out_whole_combinations(tmp_path):
    path = tmp_path / "n.h5ad"
    scperturb_fixture(n_cells=300).write_h5ad(path)
    adata = perturbseq.load_scperturb(path, **SMALL)
    split = perturbseq.norman_ood_split(adata, combo_frac=0.0, test_frac=0.3, seed=0)
    combos = adata.obs["n_guides"].to_numpy() >= 2
    by_label = pd.crosstab(adata.obs["perturbation"], split)
    assert (by_label.gt(0).sum(1) <= 2).all()  # a combination is in one split (or train+val)
    assert set(split[combos]) == {"test", "unused"}  # combo_frac=0: no combination trains
    assert split[combos].eq("test").groupby(adata.obs["perturbation"][combos],
                                            observed=True).all().sum() == 1
    assert set(split[~combos]) <= {"train", "val"}


def test_short_training_on_the_fixture(tmp_path):
    torch = pytest.importorskip("torch")
    from liftkit.perturb import SAMSVAE

    torch.set_num_threads(1)
    path = tmp_path / "n.h5ad"
    scperturb_fixture(n_cells=300).write_h5ad(path)
    adata = perturbseq.load_scperturb(path, **SMALL)
    model = SAMSVAE(adata, guide="mf", n_latent=4, hidden=16)
    losses = model.train(max_steps=60, batch_size=64, show_progress=False)
    assert model.perturbation_names == list(adata.obsm["dosage"].columns)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_filters_leaving_no_perturbation_are_a_clear_error(tmp_path):
    path = tmp_path / "n.h5ad"
    scperturb_fixture(n_cells=120).write_h5ad(path)
    with pytest.raises(ValueError, match="left no cells, genes or perturbations"):
        perturbseq.load_scperturb(path, min_cells_per_perturbation=10_000, **SMALL)


def test_dense_dosage_round_trips_through_h5ad(tmp_path):
    path = tmp_path / "n.h5ad"
    scperturb_fixture(n_cells=120).write_h5ad(path)
    adata = perturbseq.load_scperturb(path, sparse_dosage=False, **SMALL)
    assert all(t == np.float32 for t in adata.obsm["dosage"].dtypes)
    adata.write_h5ad(tmp_path / "processed.h5ad")
    back = ad.read_h5ad(tmp_path / "processed.h5ad")
    pd.testing.assert_frame_equal(back.obsm["dosage"], adata.obsm["dosage"])
    sparse = perturbseq.load_scperturb(path, **SMALL)
    np.testing.assert_array_equal(sparse.obsm["dosage"].to_numpy(), adata.obsm["dosage"])

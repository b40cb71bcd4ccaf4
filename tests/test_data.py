import hashlib
import http.server
import threading
from functools import partial

import anndata
import numpy as np
import pytest
import yaml

from liftkit import data
from liftkit.data.loaders import import_generator

PAYLOAD = b"liftkit test payload\n" * 100


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server serving one file (no external network)."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "file.csv").write_bytes(b"a,b\n1,2\n3,4\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()


def write_manifest(tmp_path, entries):
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


def remote(url, sha, name="tiny"):
    return {
        "name": name, "kind": "remote", "format": "csv", "urls": [url], "sha256": sha,
        "description": "d", "license": "CC0-1.0", "citation": "c", "shape": [2, 2],
    }


def test_repository_manifest_is_valid_and_generators_import(root):
    entries = data.read_manifest(root / "data_manifest.yaml")
    assert "toy_pooled_screen" in entries
    for entry in entries.values():
        if entry.kind == "synthetic":
            assert callable(import_generator(entry.generator))
    table = data.list_datasets(root / "data_manifest.yaml")
    assert list(table["name"]) == list(entries)


def test_unknown_dataset_names_known_ones(root):
    with pytest.raises(ValueError, match="known datasets are .*toy_pooled_screen"):
        data.load("no_such_data", path=root / "data_manifest.yaml")


def test_synthetic_load_with_overrides(root):
    screen = data.load("toy_pooled_screen", path=root / "data_manifest.yaml", n_cells=400, moi=2.0)
    assert screen.shape == (400, 200)
    # Poisson(MOI) variants per cell: mean within 4 standard errors of MOI.
    per_cell = np.asarray(screen.counts.sum(axis=1)).ravel()
    assert abs(per_cell.mean() - 2.0) < 4 * np.sqrt(2.0 / 400)


def test_generator_specs_of_both_papers_import():
    assert import_generator("liftkit.lift.toy:toy_pooled_screen").__name__ == "toy_pooled_screen"
    assert callable(import_generator("liftkit.perturb.simulate:simulate_perturb_seq"))
    with pytest.raises(ValueError, match="fix the manifest entry"):
        import_generator("liftkit.lift.toy:no_such_function")


def test_manifest_field_errors(tmp_path):
    bad = write_manifest(tmp_path, [{"name": "x", "kind": "weird", "format": "csv",
                                     "description": "d", "license": "l", "citation": "c"}])
    with pytest.raises(ValueError, match="kind 'weird'"):
        data.read_manifest(bad)
    missing = write_manifest(tmp_path, [{"name": "x", "kind": "remote"}])
    with pytest.raises(ValueError, match="lacks field"):
        data.read_manifest(missing)


def test_fetch_verifies_and_caches(tmp_path, server, monkeypatch):
    url, folder = server
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    sha = hashlib.sha256((folder / "file.csv").read_bytes()).hexdigest()
    manifest = write_manifest(tmp_path, [remote(f"{url}/file.csv", sha)])
    frame = data.load("tiny", path=manifest)
    assert frame.shape == (2, 2)
    # Cached: works with the server's file gone.
    (folder / "file.csv").unlink()
    assert data.fetch("tiny", path=manifest).exists()


def test_fetch_tries_mirrors_in_order(tmp_path, server, monkeypatch):
    url, folder = server
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    sha = hashlib.sha256((folder / "file.csv").read_bytes()).hexdigest()
    entry = remote("http://127.0.0.1:9/file.csv", sha)  # a dead mirror first
    entry["urls"].append(f"{url}/file.csv")
    assert data.fetch("tiny", path=write_manifest(tmp_path, [entry])).read_bytes() == (
        folder / "file.csv"
    ).read_bytes()


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    url, _ = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(cache))
    manifest = write_manifest(tmp_path, [remote(f"{url}/file.csv", "0" * 64)])
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        data.fetch("tiny", path=manifest)
    assert not cache.exists() or not any(cache.iterdir())


def test_fetch_offline_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    manifest = write_manifest(tmp_path, [remote("http://127.0.0.1:9/file.csv", "a" * 64)])
    with pytest.raises(RuntimeError, match="cannot download .* no verified copy"):
        data.fetch("tiny", path=manifest)


def test_fetch_refuses_unrecorded_checksum(tmp_path, server, monkeypatch, capsys):
    url, _ = server
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    manifest = write_manifest(tmp_path, [remote(f"{url}/file.csv", None)])
    with pytest.raises(RuntimeError, match="no checksum recorded"):
        data.fetch("tiny", path=manifest)
    assert data.fetch("tiny", path=manifest, allow_unverified=True).exists()
    assert "record it in data_manifest.yaml" in capsys.readouterr().out


def test_validate_counts():
    good = anndata.AnnData(np.ones((3, 2), dtype=np.float32))
    good.layers["counts"] = np.array([[1, 0], [2, 3], [0, 0]], dtype=np.float32)
    data.validate_counts(good)
    with pytest.raises(ValueError, match=r"layer 'raw' not in adata.layers"):
        data.validate_counts(good, "raw")
    good.layers["counts"] = good.layers["counts"] + 0.5
    with pytest.raises(ValueError, match="non-negative integers but found 1.5"):
        data.validate_counts(good)
    good.layers["counts"] = -good.layers["counts"]
    with pytest.raises(ValueError, match="non-negative integers but found -1.5"):
        data.validate_counts(good)
    good.layers["counts"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        data.validate_counts(good)
    with pytest.raises(ValueError, match="expected an AnnData"):
        data.validate_counts(good.layers["counts"])


def test_environment_yml_matches_pip_route(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-e .[book,test]"]
    pyproject = (root / "pyproject.toml").read_text()
    assert "book = [" in pyproject and "test = [" in pyproject


def test_fetch_verifies_an_md5_checksum(tmp_path, server, monkeypatch):
    url, folder = server
    monkeypatch.setenv("LIFTKIT_DATA_DIR", str(tmp_path / "cache"))
    entry = remote(f"{url}/file.csv", None)
    entry["checksum"] = "md5:" + hashlib.md5((folder / "file.csv").read_bytes()).hexdigest()
    manifest = write_manifest(tmp_path, [entry])
    assert data.get_entry("tiny", manifest).known_hash == entry["checksum"]
    assert data.load("tiny", path=manifest).shape == (2, 2)
    entry["checksum"] = "md5:" + "f" * 32
    (tmp_path / "cache" / "tiny.csv").unlink()
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        data.fetch("tiny", path=write_manifest(tmp_path, [entry]))
    assert not (tmp_path / "cache" / "tiny.csv").exists()


def test_legacy_sha256_field_is_the_known_hash(tmp_path):
    manifest = write_manifest(tmp_path, [remote("https://h/x.csv", "ab" * 32)])
    assert data.get_entry("tiny", manifest).known_hash == "sha256:" + "ab" * 32
    assert data.list_datasets(manifest)["checksum"].tolist() == ["sha256:" + "ab" * 32]


def test_remote_without_loader_refuses_parameters(tmp_path):
    manifest = write_manifest(tmp_path, [remote("http://127.0.0.1:9/file.csv", "a" * 64)])
    with pytest.raises(ValueError, match="remote without a loader and takes no parameters"):
        data.load("tiny", path=manifest, n_top_genes=10)

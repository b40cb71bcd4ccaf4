from pathlib import Path

import numpy as np
import pytest
import torch

import liftkit
from liftkit.companion.profiles import configure
from liftkit.utils import ENV_ROOT, progress_enabled, repo_root


def test_set_seed_reproduces_all_generators():
    liftkit.set_seed(7)
    a = (np.random.rand(3), torch.rand(3))  # noqa: NPY002 - the global state is what set_seed seeds
    liftkit.set_seed(7)
    b = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_set_seed_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        liftkit.set_seed(bad)


def test_resolve_device():
    assert liftkit.resolve_device("cpu").type == "cpu"
    auto = liftkit.resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        liftkit.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            liftkit.resolve_device("cuda")


def test_configure_profiles_and_overrides():
    table = {"smoke": {"n": 1, "m": 2}, "default": {"n": 10, "m": 20}}
    cfg = configure("default", table, n=None, m=5)
    assert (cfg.n, cfg.m, cfg.profile) == (10, 5, "default")
    with pytest.raises(ValueError, match="unknown profile"):
        configure("huge", table)
    with pytest.raises(ValueError, match="no 'paper' profile"):
        configure("paper", table)
    with pytest.raises(ValueError, match="known parameters"):
        configure("smoke", table, k=3)


def test_progress_off_under_ci(monkeypatch):
    monkeypatch.delenv("LIFTKIT_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    monkeypatch.setenv("LIFTKIT_PROGRESS", "1")
    assert progress_enabled()


def fake_checkout(folder: Path) -> Path:
    """A folder that looks like a liftkit checkout (the two marker files)."""
    (folder / "book").mkdir(parents=True)
    (folder / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (folder / "data_manifest.yaml").write_text("datasets: []\n")
    return folder


def test_repo_root_found_from_a_subfolder(root, monkeypatch):
    monkeypatch.delenv(ENV_ROOT, raising=False)
    monkeypatch.chdir(root / "book")
    assert repo_root() == root
    assert repo_root(root / "tests" / "notebooks") == root


def test_repo_root_from_environment(tmp_path, monkeypatch):
    checkout = fake_checkout(tmp_path / "elsewhere")
    monkeypatch.setenv(ENV_ROOT, str(checkout))
    assert repo_root() == checkout.resolve()  # wins over the working directory's checkout
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"point {ENV_ROOT} at a liftkit checkout"):
        repo_root()


def test_repo_root_search_and_fallback_order(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_ROOT, raising=False)
    checkout = fake_checkout(tmp_path / "checkout")
    assert repo_root(checkout / "book", fallback=None) == checkout.resolve()
    # outside any checkout, the folder beside the package is the last resort
    outside = tmp_path / "outside"
    outside.mkdir()
    assert repo_root(outside, fallback=checkout) == checkout.resolve()


def test_repo_root_clear_error_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_ROOT, raising=False)
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "site-packages"  # an installed package: no checkout beside it
    site.mkdir()
    with pytest.raises(FileNotFoundError, match=f"no liftkit repository.*set {ENV_ROOT}"):
        repo_root(fallback=site)
    with pytest.raises(FileNotFoundError, match="run from a checkout"):
        repo_root(tmp_path, fallback=None)

import numpy as np
import pytest
import torch

import liftkit
from liftkit.companion.profiles import configure
from liftkit.plotting import savefig
from liftkit.utils import progress_enabled


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


def test_savefig_atomic(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setenv("LIFTKIT_FIGURE_DIR", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    (path,) = savefig(fig, "demo")
    assert path.exists() and path.stat().st_size > 0
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(ValueError, match="plain file stem"):
        savefig(fig, "../escape")
    plt.close(fig)

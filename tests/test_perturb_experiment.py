"""liftkit.perturb.experiment without trainings: the cell splits, the Table 1 summary against a
hand mean and sd, the Table 1 CSV round trip and its provenance columns."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from liftkit.perturb import experiment
from liftkit.perturb.experiment import (
    GUIDE_LABELS,
    provenance,
    read_table1,
    split_cells,
    split_validation,
    summarise,
    write_table1,
)

PROVENANCE_KEYS = {
    "liftkit_version", "git_commit", "git_tree", "torch_version", "device", "torch_threads",
    "python",
}


def _cells(n):
    """Cells named by their index, so that a split can be checked by name."""
    return ad.AnnData(
        X=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
    )


def test_split_cells_is_a_seeded_partition():
    adata = _cells(1000)
    train, test = split_cells(adata, test_frac=0.2, seed=3)
    names_train, names_test = set(train.obs_names), set(test.obs_names)
    assert not names_train & names_test
    assert names_train | names_test == set(adata.obs_names)
    # each cell is in test with probability 0.2: 200 +- 4 binomial sd (sd = sqrt(1000*.2*.8))
    assert abs(test.n_obs - 200) < 4 * np.sqrt(1000 * 0.2 * 0.8)
    np.testing.assert_array_equal(train.X, adata[sorted(names_train, key=lambda s: int(s[1:]))].X)
    again, _ = split_cells(adata, test_frac=0.2, seed=3)
    assert list(again.obs_names) == list(train.obs_names)
    other, _ = split_cells(adata, test_frac=0.2, seed=4)
    assert list(other.obs_names) != list(train.obs_names)
    for frac in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_frac must lie in"):
            split_cells(adata, test_frac=frac)


@pytest.mark.parametrize(
    "n, val_frac, min_cells, n_val",
    [(1000, 0.1, 50, 100), (1000, 0.1, 150, 150), (1003, 0.0995, 10, 100), (300, 0.1, 100, 100)],
)
def test_split_validation_sizes(n, val_frac, min_cells, n_val):
    # n_val = max(round(val_frac * n), min_cells): 100, 150, round(99.8) = 100, 100
    fit, val = split_validation(_cells(n), val_frac=val_frac, min_cells=min_cells, seed=1)
    assert val.n_obs == n_val and fit.n_obs == n - n_val
    assert not set(fit.obs_names) & set(val.obs_names)
    assert set(fit.obs_names) | set(val.obs_names) == {f"c{i}" for i in range(n)}


def test_split_validation_refuses_half_the_cells_and_is_seeded():
    with pytest.raises(ValueError, match="cannot spare 100 for validation"):
        split_validation(_cells(200), val_frac=0.1, min_cells=100)  # 100 >= 200 // 2
    a = split_validation(_cells(500), seed=2)[1].obs_names
    b = split_validation(_cells(500), seed=2)[1].obs_names
    c = split_validation(_cells(500), seed=3)[1].obs_names
    assert list(a) == list(b) and list(a) != list(c)


def test_summarise_against_a_hand_mean_and_sd():
    corr, mf = GUIDE_LABELS["corr"], GUIDE_LABELS["mf"]
    results = pd.DataFrame(
        {
            "model": ["SAMS-VAE", "SAMS-VAE", "SAMS-VAE", "Conditional VAE", "Conditional VAE"],
            "inference": [corr, corr, corr, mf, mf],
            "iwelbo": [-10.0, -12.0, -14.0, -20.0, -21.0],
            "mask_f1": [0.5, 0.7, 0.9, np.nan, np.nan],
        }
    )
    out = summarise(results, ["iwelbo", "mask_f1"])
    # Table 1's order puts the conditional VAE first. SAMS-VAE: mean -12, sample sd
    # sqrt(((-10+12)^2 + 0 + (-14+12)^2) / 2) = 2; mask F1 mean 0.7, sd 0.2.
    # Conditional VAE: mean -20.5, sd sqrt((0.25 + 0.25) / 1) = 0.707; no masks: "-".
    assert list(out.index) == [("Conditional VAE", mf), ("SAMS-VAE", corr)]
    assert out.loc[("SAMS-VAE", corr), "iwelbo"] == "-12.000 ± 2.000"
    assert out.loc[("SAMS-VAE", corr), "mask_f1"] == "0.700 ± 0.200"
    assert out.loc[("Conditional VAE", mf), "iwelbo"] == f"-20.500 ± {np.sqrt(0.5):.3f}"
    assert out.loc[("Conditional VAE", mf), "mask_f1"] == "-"
    single = summarise(results.iloc[[0]], ["iwelbo"])  # one seed: sd reported as 0
    assert single.iloc[0, 0] == "-10.000 ± 0.000"


def test_provenance_keys_and_values():
    import liftkit

    prov = provenance("cpu")
    assert set(prov) == PROVENANCE_KEYS
    assert prov["device"] == "cpu" and prov["liftkit_version"] == liftkit.__version__
    assert prov["torch_version"] == torch.__version__
    assert prov["torch_threads"] == str(torch.get_num_threads())
    assert prov["git_tree"] in {"clean", "modified", "unknown"}
    assert prov["git_commit"] == "unknown" or len(prov["git_commit"]) == 40


def test_table1_csv_round_trip(tmp_path, monkeypatch):
    """write_table1 with the grid replaced by two hand rows: the CSV holds the rows, the
    provenance and the settings; read_table1 returns it only for the same settings."""
    rows = pd.DataFrame(
        {"model": ["SAMS-VAE", "CPA-VAE"], "inference": [GUIDE_LABELS["corr"], GUIDE_LABELS["mf"]],
         "seed": [0, 0], "iwelbo": [-11.25, -12.5], "stopped_early": [True, False]}
    )
    monkeypatch.setattr(experiment, "table1_data", lambda params: (None, None, None, None, None))
    monkeypatch.setattr(experiment, "run_table1", lambda *a, **k: (rows.copy(), None))
    settings = {"data": {"seed": 0}, "fit": {"lr": 0.01}, "eval": {"top_k": 20}}
    path = tmp_path / "table1.csv"
    threads = torch.get_num_threads()
    try:
        written = write_table1(path, seeds=[0], settings=settings, device="cpu")
    finally:
        torch.set_num_threads(threads)  # write_table1 runs fits on one thread
    assert [p.name for p in tmp_path.iterdir()] == ["table1.csv"]  # atomic: no temporary left
    back = read_table1(path, settings)
    # a CSV keeps the text of every cell (types are re-inferred: "1" threads come back as 1)
    pd.testing.assert_frame_equal(back.astype(str), written.astype(str))
    assert PROVENANCE_KEYS <= set(back.columns)
    assert json.loads(back["settings"].iloc[0]) == settings
    assert back["iwelbo"].tolist() == [-11.25, -12.5] and back["device"].eq("cpu").all()
    assert read_table1(path, {**settings, "fit": {"lr": 0.02}}) is None  # other settings
    assert read_table1(tmp_path / "missing.csv", settings) is None

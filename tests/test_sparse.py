"""Sparse dosages and sparse DE: a CSR dosage matrix (or a sparse DataFrame) is read, deduplicated
into SVAE+ conditions and trained on one dense minibatch at a time with the same numbers as the
dense matrix, and the data DE of a CSR count matrix equals numpy on its dense copy; neither path
makes a cells x perturbations or cells x genes matrix dense."""

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from liftkit.perturb import SAMSVAE, SVAEPlus, differential_expression, objectives
from liftkit.perturb.evaluation import log_normalise
from liftkit.perturb.modules import SAMSVAEModule, SVAEPlusModule
from liftkit.perturb.setup import Conditions, CountRows, distinct_rows, read_dosage
from liftkit.perturb.training import fit_module
from liftkit.utils import set_seed

N_CELLS, N_GENES, N_PERTS = 240, 30, 5
MODEL = {"n_latent": 3, "hidden": 16}
FIT = {"max_steps": 12, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-6, "seed": 0}


def _counts(n=N_CELLS, g=N_GENES, seed=0):
    """Mostly-zero counts with unequal library sizes; every cell has a count."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 0.8, (n, g)) * rng.uniform(0.5, 3.0, (n, 1)))
    x[np.arange(n), rng.integers(0, g, n)] += 1
    return x.astype(np.float32)


def _dosage(n=N_CELLS, t=N_PERTS, seed=0):
    """Controls, single guides and a few pairs (0/1)."""
    rng = np.random.default_rng(seed)
    d = np.zeros((n, t), np.float32)
    kind = rng.integers(0, 4, n)  # 0: control, 1-2: one guide, 3: a pair
    first, second = rng.integers(0, t, n), rng.integers(0, t, n)
    d[kind > 0, first[kind > 0]] = 1.0
    d[kind == 3, second[kind == 3]] = 1.0
    return d


def _obs(n):
    """AnnData's default cell names."""
    return pd.Index([str(i) for i in range(n)])


@pytest.fixture
def densified(monkeypatch):
    """Row counts of every sparse -> dense conversion (``todense`` goes through ``toarray``)."""
    rows = []
    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        original = cls.toarray

        def recording(self, *args, _original=original, **kwargs):
            rows.append(self.shape[0])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "toarray", recording)
    return rows


def test_read_dosage_sparse_from_every_storage():
    d = _dosage()
    names = [f"P{t}" for t in range(N_PERTS)]
    x = np.ones((N_CELLS, 2), np.float32)
    stores = {
        "dense": d,
        "csr": sp.csr_matrix(d),
        "csc": sp.csc_matrix(d),
        "frame": pd.DataFrame(d, columns=names, index=_obs(N_CELLS)),
        "sparse_frame": pd.DataFrame.sparse.from_spmatrix(sp.csr_matrix(d), columns=names,
                                                         index=_obs(N_CELLS)),
    }
    for key, store in stores.items():
        adata = ad.AnnData(x, obsm={"dosage": store})
        out, got_names = read_dosage(adata, sparse=True)
        assert sp.issparse(out) and out.format == "csr" and out.dtype == np.float32, key
        np.testing.assert_array_equal(out.toarray(), d, err_msg=key)
        dense, dense_names = read_dosage(adata)
        assert isinstance(dense, np.ndarray) and dense.dtype == np.float32, key
        np.testing.assert_array_equal(dense, d, err_msg=key)
        assert got_names == dense_names == (names if "frame" in key else
                                            [f"pert{t}" for t in range(N_PERTS)])


def test_read_dosage_sparse_checks_the_stored_values():
    x = np.ones((3, 2), np.float32)
    for bad in (-1.0, np.nan, np.inf):
        d = sp.csr_matrix(np.array([[0, 1], [1, 0], [0, bad]]))
        with pytest.raises(ValueError, match="NaN, inf or negative"):
            read_dosage(ad.AnnData(x, obsm={"dosage": d}), sparse=True)
    # a sparse DataFrame is not made dense to be read
    frame = pd.DataFrame.sparse.from_spmatrix(sp.csr_matrix(np.eye(3, 2, dtype=np.float32)),
                                              index=_obs(3))
    adata = ad.AnnData(x, obsm={"dosage": frame})
    frame_to_numpy = pd.DataFrame.to_numpy
    try:
        pd.DataFrame.to_numpy = None  # any call fails
        out, _ = read_dosage(adata, sparse=True)
    finally:
        pd.DataFrame.to_numpy = frame_to_numpy
    assert out.toarray().tolist() == [[1, 0], [0, 1], [0, 0]]


def test_distinct_rows_against_numpy_unique():
    d = _dosage(400, seed=3)
    d[5, 1] = 2.0  # a dosage of 2 is another row than a dosage of 1
    ref_rows, ref_inverse = np.unique(d, axis=0, return_inverse=True)
    # explicit zeros, unsorted indices and duplicate entries describe the same rows
    coo = sp.coo_matrix(d)
    rng = np.random.default_rng(0)
    order = rng.permutation(coo.nnz)
    extra = np.array([[0, 0, 0.0], [7, 2, 0.0]])
    rows_i = np.concatenate([coo.row[order], extra[:, 0].astype(int), [5]])
    cols_i = np.concatenate([coo.col[order], extra[:, 1].astype(int), [1]])
    vals = np.concatenate([coo.data[order], extra[:, 2], [0.0]])
    messy = sp.coo_matrix((vals, (rows_i, cols_i)), shape=d.shape).tocsr()
    for given in (d, sp.csr_matrix(d), messy):
        rows, inverse = distinct_rows(given)
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_array_equal(inverse, ref_inverse.reshape(-1))
    rows, inverse = distinct_rows(sp.csr_matrix((4, 3), dtype=np.float32))  # all controls
    assert rows.tolist() == [[0, 0, 0]] and inverse.tolist() == [0, 0, 0, 0]


def test_conditions_from_csr_equal_conditions_from_dense(densified):
    d = _dosage(400, seed=1)
    names = [f"P{t}" for t in range(N_PERTS)]
    # by hand: the sorted distinct non-empty rows, and each cell's one-hot condition
    keys = sorted({tuple(r) for r in d.tolist() if sum(r) > 0})
    hand = np.zeros((len(d), len(keys)), np.float32)
    for i, r in enumerate(d.tolist()):
        if sum(r) > 0:
            hand[i, keys.index(tuple(r))] = 1.0
    dense, sparse = Conditions(d, names), Conditions(sp.csr_matrix(d), names)
    assert dense.names == sparse.names and len(sparse) == len(keys)
    np.testing.assert_array_equal(sparse.rows, np.array(keys, np.float32))
    densified.clear()
    onehot = sparse.design(sp.csr_matrix(d))
    assert sp.issparse(onehot) and onehot.dtype == np.float32
    assert max(densified) < len(d) / 4  # only the distinct rows were made dense
    np.testing.assert_array_equal(onehot.toarray(), hand)
    np.testing.assert_array_equal(dense.design(d), hand)
    with pytest.raises(ValueError, match="unseen"):
        sparse.design(sp.csr_matrix(np.ones((1, N_PERTS), np.float32)))


def test_sparse_and_dense_dosage_rows_give_the_same_minibatches():
    d = _dosage()
    rows, ref = CountRows(sp.csr_matrix(d)), torch.as_tensor(d)
    for idx in (torch.tensor([3, 0, 3, 239]), torch.randperm(N_CELLS)[:32]):
        assert torch.equal(rows[idx], ref[idx])
    assert torch.equal(rows.sum(0), ref.sum(0))


def _dense_reference_fit(module, x, design, d_val, x_val):
    """The minibatch loop of :meth:`PerturbVAE.train` on dense tensors (no CountRows)."""
    lx = np.log1p(x.astype(np.float64))  # encoder standardisation in float64 (App. A.3)
    module.encoder.x_mean.copy_(torch.as_tensor(lx.mean(0).astype(np.float32)))
    sd = torch.as_tensor(lx.std(0, ddof=1).astype(np.float32))
    module.encoder.x_scale.copy_(sd.clamp_min(1e-2))
    x, design = torch.as_tensor(x), torch.as_tensor(design)
    n_t = design.sum(0)

    def loss_fn(idx):
        return objectives.negative_elbo(module, x[idx], design[idx], n_t, 1)

    set_seed(FIT["seed"])
    val = (torch.as_tensor(x_val), torch.as_tensor(d_val))
    return fit_module(module, loss_fn, len(x), val=val, eval_every=4, **FIT)


@pytest.mark.parametrize("store", ["csr", "sparse_frame"])
@pytest.mark.parametrize("name", ["SAMS-VAE", "SVAE+"])
def test_training_on_sparse_dosage_equals_training_on_dense_tensors(store, name, one_thread):
    x, d = _counts(), _dosage()
    xv, dv = _counts(40, seed=2), _dosage(40, seed=2)
    names = [f"P{t}" for t in range(N_PERTS)]
    to_store = {"csr": sp.csr_matrix,
                "sparse_frame": lambda m: pd.DataFrame.sparse.from_spmatrix(
                    sp.csr_matrix(m), columns=names, index=_obs(len(m)))}[store]
    cls, module_cls = {"SAMS-VAE": (SAMSVAE, SAMSVAEModule),
                       "SVAE+": (SVAEPlus, SVAEPlusModule)}[name]
    adata = ad.AnnData(sp.csr_matrix(x), obsm={"dosage": to_store(d)})
    val = ad.AnnData(sp.csr_matrix(xv), obsm={"dosage": to_store(dv)})
    model = cls(adata, layer=None, device="cpu", seed=0, **MODEL)
    losses = model.train(validation=val, eval_every=4, show_progress=False, **FIT)
    # the reference: dense tensors; SVAE+'s conditions one-hot by np.unique on the dense rows
    design, design_val = d, dv
    if name == "SVAE+":
        keys = np.unique(d[d.sum(1) > 0], axis=0)
        design = (d[:, None, :] == keys[None]).all(-1).astype(np.float32)
        design_val = (dv[:, None, :] == keys[None]).all(-1).astype(np.float32)
        design_val[dv.sum(1) == 0] = 0.0
    set_seed(0)
    module = module_cls(N_GENES, design.shape[1], **MODEL)
    ref_losses, record = _dense_reference_fit(module, x, design, design_val, xv)
    np.testing.assert_array_equal(losses, ref_losses)
    np.testing.assert_array_equal(model.record.history["val"], record.history["val"])
    if store == "csr":  # a matrix does not name its columns
        names = [f"pert{t}" for t in range(N_PERTS)]
    assert model.condition_names == (names if name == "SAMS-VAE" else
                                     ["+".join(names[t] for t in np.flatnonzero(r)) for r in keys])


def _hand_de(x, d, target_sum):
    """Normalise each cell to ``target_sum``, log1p, mean per single-guide group minus the
    control mean: numpy on the dense matrices."""
    y = np.log1p(target_sum * x.astype(np.float64) / x.astype(np.float64).sum(1, keepdims=True))
    n_guides = d.sum(1)
    control = y[n_guides == 0].mean(0)
    out = {}
    for t in range(d.shape[1]):
        cells = (n_guides == 1) & (d[:, t] == 1)
        if cells.sum():
            out[f"pert{t}"] = y[cells].mean(0) - control
    return pd.DataFrame(out).T


@pytest.mark.parametrize("target_sum", [1e4, 50.0])
def test_de_of_a_csr_matrix_equals_numpy_on_its_dense_copy(target_sum, densified):
    x, d = _counts(), _dosage()
    d[:, 4] = 0.0  # a perturbation without cells is left out
    adata = ad.AnnData(sp.csr_matrix(x), obsm={"dosage": sp.csr_matrix(d)})
    densified.clear()
    de = differential_expression(adata, layer=None, target_sum=target_sum)
    assert max(densified) <= N_PERTS  # only the [perturbations, G] means were made dense
    ref = _hand_de(x, d, target_sum)
    assert list(de.index) == list(ref.index) == ["pert0", "pert1", "pert2", "pert3"]
    np.testing.assert_allclose(de.to_numpy(), ref.to_numpy(), rtol=1e-12, atol=1e-13)
    dense = ad.AnnData(x, obsm={"dosage": d})
    np.testing.assert_allclose(differential_expression(dense, layer=None, target_sum=target_sum),
                               de, rtol=1e-12, atol=1e-13)


def test_log_normalise_returns_the_type_it_was_given():
    x = _counts(20, 6)
    ref = np.log1p(1e4 * x.astype(np.float64) / x.astype(np.float64).sum(1, keepdims=True))
    out = log_normalise(sp.csr_matrix(x))
    assert sp.issparse(out) and out.format == "csr" and out.dtype == np.float64
    np.testing.assert_allclose(out.toarray(), ref, rtol=1e-12)
    dense = log_normalise(x)
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, out.toarray())


def test_log_normalise_keeps_torch_threads(one_thread):
    log_normalise(sp.csr_matrix(_counts(20, 6)))  # scanpy's numba kernel on OpenMP
    assert torch.get_num_threads() == 1


def _large_screen(n, g, t, density=0.01, seed=0):
    rng = np.random.default_rng(seed)
    x = sp.random(n, g, density=density, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    x = (x + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), np.zeros(n, int))), (n, g)))
    label = rng.integers(0, t + 1, n)  # label t: control
    hit = np.flatnonzero(label < t)
    d = sp.csr_matrix((np.ones(len(hit), np.float32), (hit, label[hit])), shape=(n, t))
    return ad.AnnData(x.tocsr(), obsm={"dosage": d})


@pytest.mark.parametrize("cls", [SAMSVAE, SVAEPlus])
def test_training_path_allocates_far_less_than_the_dense_matrices(cls, one_thread, densified):
    n, g, t = 20000, 400, 300  # dense float32 counts 32 MB, dosages 24 MB
    dense_bytes = n * g * 4 + n * t * 4

    def run(adata):
        model = cls(adata, layer=None, device="cpu", seed=0, n_latent=2, hidden=8)
        model.train(max_steps=2, batch_size=64, show_progress=False)
        return differential_expression(adata, layer=None)

    run(_large_screen(200, 10, 3))  # imports and numba compilation outside the trace
    adata = _large_screen(n, g, t)
    densified.clear()
    tracemalloc.start()
    try:
        de = run(adata)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert de.shape == (t, g)
    assert peak < dense_bytes / 6, f"peak {peak / 1e6:.1f} MB vs dense {dense_bytes / 1e6:.0f} MB"
    # minibatches, the distinct dosage rows (t + 1 with the control) and the [t, G] DE means
    assert max(densified) <= t + 1, f"dense blocks of {sorted(set(densified))[-3:]} rows"

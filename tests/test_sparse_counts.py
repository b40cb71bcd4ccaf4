"""Sparse counts end to end: a CSR count matrix is read, standardised and trained on one dense
minibatch at a time (:class:`liftkit.perturb.setup.CountRows`), with the same numbers as the
same matrix held dense, and the full matrix is never made dense."""

import tracemalloc

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from liftkit.perturb import SAMSVAE, objectives
from liftkit.perturb.modules import SAMSVAEModule
from liftkit.perturb.setup import CountRows, read_counts
from liftkit.perturb.training import fit_module
from liftkit.utils import set_seed

N_CELLS, N_GENES, N_PERTS = 240, 30, 3
MODEL = {"n_latent": 3, "hidden": 16, "guide": "corr"}
FIT = {"max_steps": 24, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-6, "seed": 0}


def _counts(n=N_CELLS, g=N_GENES, seed=0):
    """Poisson counts with mostly zeros (about 70%), every cell with at least one count."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 0.8, (n, g))).astype(np.float32)
    x[np.arange(n), rng.integers(0, g, n)] += 1.0
    return x


def _dosage(n=N_CELLS):
    """One perturbation per cell in turn; every fourth cell a control."""
    label = np.arange(n) % (N_PERTS + 1)
    return (label[:, None] == np.arange(N_PERTS)).astype(np.float32)


@pytest.fixture
def densified(monkeypatch):
    """Row counts of every CSR -> dense conversion (``todense`` goes through ``toarray``)."""
    rows = []
    original = sp.csr_matrix.toarray

    def recording(self, *args, **kwargs):
        rows.append(self.shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", recording)
    return rows


def test_read_counts_sparse_keeps_the_matrix_and_its_checks():
    x = _counts()
    adata = ad.AnnData(X=np.zeros_like(x), layers={"counts": sp.csr_matrix(x)})
    out = read_counts(adata, sparse=True)
    assert sp.issparse(out) and out.format == "csr" and out.dtype == np.float32
    assert out.nnz == int((x > 0).sum())
    np.testing.assert_array_equal(out.toarray(), x)
    np.testing.assert_array_equal(read_counts(adata), x)  # dense default unchanged
    x[5] = 0.0
    empty = ad.AnnData(X=sp.csr_matrix(x))
    for sparse in (True, False):
        with pytest.raises(ValueError, match="1 cells have zero total counts"):
            read_counts(empty, layer=None, sparse=sparse)


def test_count_rows_against_numpy():
    x = _counts()
    rows = CountRows(sp.csr_matrix(x))
    idx = torch.tensor([7, 0, 7, 239])
    np.testing.assert_array_equal(rows[idx].numpy(), x[[7, 0, 7, 239]])
    np.testing.assert_array_equal(rows[10:13].numpy(), x[10:13])
    assert tuple(rows.shape) == x.shape and len(rows) == N_CELLS
    # library sizes: a hand sum over genes, in float64
    np.testing.assert_allclose(rows.sum(1).numpy(), x.astype(np.float64).sum(1), rtol=0)
    for log1p, transform in [(True, np.log1p), (False, np.asarray)]:
        mean, sd = rows.moments(log1p)
        lx = transform(x.astype(np.float64))
        np.testing.assert_allclose(mean.numpy(), lx.mean(0), rtol=1e-6)
        np.testing.assert_allclose(sd.numpy(), lx.std(0, ddof=1), rtol=1e-5)


def test_count_rows_never_densify_more_than_asked(densified):
    rows = CountRows(sp.csr_matrix(_counts()))
    rows[torch.arange(16)]
    rows.sum(1)
    rows.moments()
    assert densified == [16]


def _sparse_fit(x_csr, d, val_csr, d_val):
    """The training loop of :meth:`PerturbVAE.train` with counts read through CountRows."""
    set_seed(0)
    module = SAMSVAEModule(N_GENES, N_PERTS, **MODEL)
    rows, val_rows = CountRows(x_csr), CountRows(val_csr)
    mean, sd = rows.moments()
    module.encoder.x_mean.copy_(mean)
    module.encoder.x_scale.copy_(sd.clamp_min(1e-2))
    d, d_val = torch.as_tensor(d), torch.as_tensor(d_val)
    n_t = d.sum(0)
    set_seed(0)

    def loss_fn(idx):
        return objectives.negative_elbo(module, rows[idx], d[idx], n_t, 1)

    losses, record = fit_module(
        module, loss_fn, len(rows), val=(val_rows, d_val), eval_every=8, **FIT
    )
    return module, losses, record


def test_training_from_csr_equals_training_from_dense(densified):
    x, d = _counts(), _dosage()
    xv, dv = _counts(40, seed=3), _dosage(40)
    model = SAMSVAE(ad.AnnData(X=x, obsm={"dosage": d}), layer=None, device="cpu", seed=0, **MODEL)
    dense_losses = model.train(
        validation=ad.AnnData(X=xv, obsm={"dosage": dv}), eval_every=8, show_progress=False,
        **{k: FIT[k] for k in ("max_steps", "batch_size", "lr", "weight_decay", "seed")},
    )
    densified.clear()
    module, losses, record = _sparse_fit(sp.csr_matrix(x), d, sp.csr_matrix(xv), dv)
    np.testing.assert_allclose(losses, dense_losses, rtol=1e-5)
    np.testing.assert_allclose(record.history["val"], model.record.history["val"], rtol=1e-5)
    dense_state = model.module.state_dict()
    for name, value in module.state_dict().items():
        np.testing.assert_allclose(value, dense_state[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # one minibatch at a time; the validation cells (40) in one chunk; never the 240 cells
    assert set(densified) <= {FIT["batch_size"], 40}, sorted(set(densified))
    assert densified.count(FIT["batch_size"]) == FIT["max_steps"]


def test_reading_a_large_csr_allocates_far_less_than_the_dense_matrix():
    n, g = 20000, 500  # dense float32: 40 MB; about 1% nonzero
    rng = np.random.default_rng(0)
    x = sp.random(n, g, density=0.01, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    x = (x + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), np.zeros(n, int))), (n, g)))
    adata = ad.AnnData(X=x.tocsr())
    dense_bytes = n * g * 4
    tracemalloc.start()
    try:
        rows = CountRows(read_counts(adata, layer=None, sparse=True))
        rows.sum(1)
        rows.moments()
        rows[torch.arange(256)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 8, f"peak {peak / 1e6:.1f} MB vs dense {dense_bytes / 1e6:.0f} MB"


def test_perturb_vae_never_densifies_a_csr_layer(densified):
    x, d = _counts(), _dosage()
    model = SAMSVAE(ad.AnnData(X=sp.csr_matrix(x), obsm={"dosage": d}), layer=None,
                    device="cpu", seed=0, **MODEL)
    model.train(max_steps=3, batch_size=32, show_progress=False)
    assert max(densified) <= 32, f"dense blocks of {sorted(set(densified))} rows"

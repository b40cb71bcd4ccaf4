"""Combinations out of distribution: splits, the additive baseline and distributional scores.

The SAMS-VAE paper scores held-out double perturbations of the Norman screen (sec. 4.2): a model
that learned each perturbation's latent shift (eq. 1) predicts a combination by adding them. Here
that test is run on simulated screens with designed pairs, in the convention of GEARS' splits:
a held-out combination is ``seen2``, ``seen1`` or ``seen0`` by how many of its two members have
single-perturbation cells in training (:func:`combination_split`). Unlike GEARS, a member whose
singles are held out may still appear in *training combinations*, so an additive model can learn
its effect from pools of guides, as LIFT learns single molecules from pooled measurements.

Scores per held-out combination: ATE-Pearson against the data's DE (sec. 3.2, on all genes and
on the top DE genes), the energy distance between predicted and observed cells
(:func:`energy_distance`), and the test IWELBO of the combination's cells (eqs. 6-7). The
additive baseline (:func:`additive_prediction`) is the control mean plus the sum of the members'
single-perturbation mean shifts: no model at all.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from liftkit.metrics import ate_pearson
from liftkit.perturb.evaluation import differential_expression, log_normalise
from liftkit.perturb.model import PerturbVAE
from liftkit.perturb.setup import read_counts, read_dosage
from liftkit.perturb.simulate import _decode, _to_anndata, simulate_perturb_seq

#: The GEARS names of the held-out combination categories, by members seen as singles.
CATEGORIES = ("seen2", "seen1", "seen0")


def simulated_truth(
    n_genes: int = 50, n_latent: int = 6, n_pathways: int = 3, perts_per_pathway: int = 3,
    pathway_dims: int = 2, effect_scale: float = 1.5, seed: int = 0,
) -> dict[str, Any]:
    """A ground truth of the SAMS-VAE generative model (Algorithm 1): masks, embeddings,
    pathways, decoder and dispersions, as ``simulate_perturb_seq(...).uns["truth"]``.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> truth["mask"].shape, truth["theta"].shape
    ((4, 4), (10,))
    """
    adata = simulate_perturb_seq(
        n_cells=2, n_genes=n_genes, n_latent=n_latent, n_pathways=n_pathways,
        perts_per_pathway=perts_per_pathway, pathway_dims=pathway_dims,
        effect_scale=effect_scale, seed=seed,
    )
    return dict(adata.uns["truth"])


def cells_from_truth(
    truth: dict[str, Any],
    dosage: np.ndarray,
    seed: int = 0,
    interaction: dict[str, Any] | None = None,
    library_size: float = 2000.0,
    library_sd: float = 0.3,
) -> ad.AnnData:
    """Cells with the given dosages drawn from a known truth (SAMS-VAE eq. 1 and sec. 2.2).

    ``z_i = z^b_i + sum_t d_it (e_t * m_t) [+ delta_ab if d_ia = d_ib = 1]``: the optional
    interaction adds ``interaction["shift"]`` (``[D]``) to cells that carry both members of
    ``interaction["pair"]``, an effect that is not the sum of its parts. Counts are negative
    binomial with mean ``l_i softmax(f(z_i))`` and the truth's per-gene ``theta``.

    Parameters
    ----------
    truth
        :func:`simulated_truth`.
    dosage
        ``[N, T]`` 0/1 dosages.
    seed
        NumPy seed of the basal states, library sizes and counts.
    interaction
        ``{"pair": (a, b), "shift": [D]}`` or None.
    library_size, library_sd
        Log-normal library sizes (median, log-scale sd), at least 50.

    Returns
    -------
    anndata.AnnData
        As :func:`~liftkit.perturb.simulate.simulate_perturb_seq`: ``layers["counts"]``,
        ``obsm["dosage"]``, ``obs["perturbation"]``, ``obsm["z_basal_true"]``.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells = cells_from_truth(truth, np.eye(4)[[0, 1, 1]], seed=1)
    >>> cells.obs["perturbation"].tolist()
    ['P00', 'P01', 'P01']
    """
    rng = np.random.default_rng(seed)
    dosage = np.asarray(dosage, dtype=np.float32)
    basal = rng.standard_normal((len(dosage), truth["mask"].shape[1]))
    z = basal + dosage @ (truth["embedding"] * truth["mask"])
    if interaction is not None:
        a, b = interaction["pair"]
        z = z + (dosage[:, a] * dosage[:, b])[:, None] * np.asarray(interaction["shift"])[None]
    rho = _decode(truth["decoder"], z)
    lib = np.maximum(np.round(library_size * np.exp(library_sd * rng.standard_normal(len(z)))), 50)
    theta = np.asarray(truth["theta"])[None, :]
    counts = rng.poisson(rng.gamma(shape=theta, scale=lib[:, None] * rho / theta)).astype(np.int64)
    counts[counts.sum(1) == 0, 0] = 1
    names = [str(n) for n in truth["perturbation_names"]]
    adata = _to_anndata(counts, dosage, names, np.asarray(truth["pathway"]))
    adata.obsm["z_basal_true"] = basal
    return adata


def combination_split(
    pairs: np.ndarray, n_perts: int, n_unseen: int, test_frac: float = 0.5, seed: int = 0
) -> pd.DataFrame:
    """Hold out combinations in GEARS' combo_seen2/1/0 convention.

    ``n_unseen`` perturbations lose their single-guide cells from training. A pair is ``seen2``,
    ``seen1`` or ``seen0`` by how many of its members keep them; in each category a share
    ``test_frac`` of the pairs (at least one where the category is not empty) is held out, the
    rest are training combinations, so an unseen member can still be learned from them.

    Parameters
    ----------
    pairs
        ``[K, 2]`` perturbation indices of the designed combinations.
    n_perts
        ``T``.
    n_unseen
        Perturbations whose single cells are held out.
    test_frac
        Share of each category's pairs held out.
    seed
        NumPy seed.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``a``, ``b``, ``category``, ``test`` (bool), ``order`` (a random rank,
        used to take nested training subsets), and ``attrs["unseen"]`` (the held-out singles).

    Examples
    --------
    >>> split = combination_split(np.array([[0, 1], [0, 2], [1, 2]]), 3, n_unseen=1, seed=0)
    >>> sorted(split["category"])
    ['seen1', 'seen1', 'seen2']
    """
    rng = np.random.default_rng(seed)
    pairs = np.asarray(pairs, dtype=np.int64)
    unseen = np.sort(rng.choice(n_perts, n_unseen, replace=False))
    seen = 2 - np.isin(pairs, unseen).sum(1)
    return _hold_out_by_category(pairs, seen, unseen, test_frac, rng)


def _hold_out_by_category(
    pairs: np.ndarray, seen: np.ndarray, unseen: np.ndarray, test_frac: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """The split frame of :func:`combination_split`: ``seen`` members per pair give its category,
    a random rank (``order``) per pair, and the ``test_frac`` lowest ranks of each category (at
    least one) held out."""
    frame = pd.DataFrame({"a": pairs[:, 0], "b": pairs[:, 1],
                          "category": [f"seen{s}" for s in seen],
                          "order": rng.permutation(len(pairs))})
    rank = frame.groupby("category")["order"].rank(method="first").to_numpy()
    size = frame.groupby("category")["order"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(test_frac * size))
    frame["test"] = rank <= n_test
    frame.attrs["unseen"] = np.asarray(unseen).tolist()
    return frame


def dosage_combination_split(
    adata: ad.AnnData, unseen_frac: float = 0.25, test_frac: float = 0.4, seed: int = 0
) -> pd.DataFrame:
    """:func:`combination_split` for a measured screen: its pairs and singles read from the dosage.

    The pairs are the distinct dosage rows with exactly two perturbations (Norman et al. 2019's
    paired CRISPRa guides). Of the perturbations that are members of a pair and have single-
    perturbation cells, a share ``unseen_frac`` (rounded) lose their single cells from
    training. A pair is ``seen2``, ``seen1`` or ``seen0`` (GEARS' combo_seen2/1/0) by how many
    of its members keep single cells in training: a member that the screen never measured alone
    counts as unseen too. In each category a share ``test_frac`` of the pairs (at least one) is
    held out, the others are training pairs (:func:`split_screen` then splits the cells). With
    ``unseen_frac=0`` every pair is ``seen2``: the held-out combinations of the SAMS-VAE paper's
    norman-ood split (sec. 4.2; :func:`liftkit.data.perturbseq.norman_ood_split` splits cells
    by it). Cells with three or more perturbations are in no pair and stay out of both sides.

    Parameters
    ----------
    adata
        A screen with ``obsm["dosage"]`` (cells x perturbations 0/1; controls all zero), e.g.
        ``liftkit.data.load("norman2019")``.
    unseen_frac
        Share of the paired perturbations with single cells whose singles are held out.
    test_frac
        Share of each category's pairs held out.
    seed
        NumPy seed of the unseen perturbations and of the pairs' order.

    Returns
    -------
    pandas.DataFrame
        As :func:`combination_split` (``a``, ``b`` index the dosage columns), plus ``combination``
        (``"A+B"``), and ``a_single_cells``, ``b_single_cells`` (the members' single-perturbation
        cells in the screen); ``attrs["unseen"]`` lists the held-out singles.

    Raises
    ------
    ValueError
        A screen without pairs (one perturbation per cell, e.g. Replogle et al. 2022).

    Examples
    --------
    >>> import anndata as ad, pandas as pd
    >>> d = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]])
    >>> screen = ad.AnnData(np.ones((6, 2), np.float32))
    >>> screen.obsm["dosage"] = pd.DataFrame(d, index=screen.obs_names, columns=list("ABC"))
    >>> dosage_combination_split(screen, unseen_frac=0.0)[["combination", "category"]].values.tolist()
    [['A+B', 'seen2'], ['A+C', 'seen2']]
    """
    d, names = read_dosage(adata)
    n_guides = d.sum(1)
    paired = n_guides == 2
    if not paired.any():
        raise ValueError(
            f"the screen has no cells with two perturbations (at most {int(n_guides.max())} per "
            "cell): held-out combinations need a screen with pairs, e.g. norman2019"
        )
    # the two members of each paired cell, in column order; distinct pairs sorted
    members = np.sort(np.argsort(-d[paired], axis=1, kind="stable")[:, :2], axis=1)
    pairs = np.unique(members, axis=0)
    single_cells = d[n_guides == 1].sum(0).astype(np.int64)  # [T]
    candidates = np.intersect1d(np.unique(pairs), np.flatnonzero(single_cells > 0))
    rng = np.random.default_rng(seed)
    n_unseen = int(round(unseen_frac * len(candidates)))
    unseen = np.sort(rng.choice(candidates, n_unseen, replace=False))
    kept = (single_cells > 0) & ~np.isin(np.arange(d.shape[1]), unseen)
    frame = _hold_out_by_category(pairs, kept[pairs].sum(1), unseen, test_frac, rng)
    frame["combination"] = [f"{names[a]}+{names[b]}" for a, b in pairs]
    frame["a_single_cells"], frame["b_single_cells"] = single_cells[pairs].T
    return frame


def combination_screen(
    truth: dict[str, Any], pairs: np.ndarray, cells_per_single: int, cells_per_combo: int,
    n_control: int, seed: int = 0, interaction: dict[str, Any] | None = None,
) -> ad.AnnData:
    """A designed screen: controls, every single perturbation and every pair of ``pairs``, each
    with a fixed number of cells, drawn by :func:`cells_from_truth`.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> screen = combination_screen(truth, np.array([[0, 1]]), 3, 2, 4)
    >>> screen.obs["perturbation"].value_counts().sort_index().tolist()
    [3, 2, 3, 3, 3, 4]
    """
    n_perts = truth["mask"].shape[0]
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    combos = np.zeros((len(pairs), n_perts), np.float32)
    combos[np.arange(len(pairs))[:, None], pairs] = 1.0
    groups = np.concatenate([np.zeros((1, n_perts), np.float32), np.eye(n_perts, dtype=np.float32),
                             combos])
    reps = np.concatenate([[n_control], np.full(n_perts, cells_per_single),
                           np.full(len(pairs), cells_per_combo)]).astype(int)
    return cells_from_truth(truth, np.repeat(groups, reps, axis=0), seed, interaction)


def split_screen(
    screen: ad.AnnData, split: pd.DataFrame, train_fraction: float = 1.0,
    control_test_frac: float = 0.3, seed: int = 0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Training and test cells of a designed screen under a :func:`combination_split`.

    Training: a share of the controls, the single cells of seen perturbations, and the cells of
    the training pairs; with ``train_fraction < 1`` only that share of the training pairs
    (the lowest ``order`` ranks, so smaller fractions are nested in larger ones; the data-
    efficiency curve). Test: the other controls and the held-out pairs' cells.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> pairs = np.array([[0, 1], [2, 3]])
    >>> screen = combination_screen(truth, pairs, 3, 2, 10)
    >>> split = combination_split(pairs, 4, n_unseen=0, test_frac=0.5)
    >>> train, test = split_screen(screen, split)
    >>> train.n_obs, test.n_obs
    (21, 5)
    """
    d, _ = read_dosage(screen)
    n_guides = d.sum(1)
    unseen = np.zeros(d.shape[1], bool)
    unseen[split.attrs["unseen"]] = True
    key = d[:, split["a"].to_numpy()] * d[:, split["b"].to_numpy()] * (n_guides == 2)[:, None]
    train_pairs = ~split["test"].to_numpy()
    n_train = int(round(train_fraction * train_pairs.sum()))
    order = np.where(train_pairs, split["order"].to_numpy(), np.iinfo(np.int64).max)
    kept = train_pairs & (order.argsort(kind="stable").argsort() < n_train)
    control = n_guides == 0
    rng = np.random.default_rng(seed)
    control_test = control & (rng.random(len(d)) < control_test_frac)
    single_seen = (n_guides == 1) & ~(d[:, unseen].sum(1) > 0)
    train = (control & ~control_test) | single_seen | (key[:, kept].sum(1) > 0)
    test = control_test | (key[:, split["test"].to_numpy()].sum(1) > 0)
    return screen[train].copy(), screen[test].copy()


def combination_de(
    adata: ad.AnnData, dosage: np.ndarray, target_sum: float = 1e4
) -> tuple[pd.DataFrame, np.ndarray]:
    """Data DE of each dosage row (a combination) against control (SAMS-VAE sec. 3.2).

    ``DE(d*) = mean y over cells with dosage exactly d* - mean y over control cells`` on
    ``y = log1p(target_sum x / l)``, for several rows at once (a membership matrix, no loop).

    Returns
    -------
    de, n_cells
        ``[Q, G]`` DataFrame indexed by the combination labels, and the cells per row.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells = cells_from_truth(truth, np.eye(4)[[0, 0, 1]] * [[1], [1], [0]], seed=1)
    >>> de, n = combination_de(cells, np.eye(4)[:1])
    >>> de.index.tolist(), n.tolist()
    (['P00'], [2])
    """
    d, names = read_dosage(adata)
    y = log_normalise(read_counts(adata), target_sum)
    dosage = np.asarray(dosage, dtype=np.float32).reshape(-1, d.shape[1])
    member = (d[:, None, :] == dosage[None, :, :]).all(-1).astype(float)  # [N, Q]
    control = d.sum(1) == 0
    if control.sum() == 0:
        raise ValueError("no control cells: the DE needs a control group")
    n = member.sum(0)
    means = (member.T @ y) / np.maximum(n, 1)[:, None]
    labels = ["+".join(names[t] for t in np.flatnonzero(r)) or "control" for r in dosage]
    de = pd.DataFrame(means - y[control].mean(0), index=labels, columns=list(map(str, adata.var_names)))
    return de, n.astype(int)


def additive_prediction(
    train: ad.AnnData, dosage: np.ndarray, target_sum: float = 1e4
) -> tuple[np.ndarray, np.ndarray]:
    """The additive baseline: control mean plus the sum of single-perturbation mean shifts.

    ``y_hat(d*) = mean_control(y) + sum_t d*_t DE_t`` with ``DE_t`` the training data's DE of the
    single perturbation ``t`` (SAMS-VAE sec. 3.2); a perturbation without single cells in
    training adds nothing (its shift is unknown to the baseline). Predicted *cells* are the
    training control cells shifted by the same sum.

    Returns
    -------
    ate, cells
        ``[Q, G]`` predicted effect against control, and ``[Q, N_control, G]`` predicted cells
        on the log-normalised scale.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells = cells_from_truth(truth, np.vstack([np.zeros((5, 4)), np.eye(4)]), seed=1)
    >>> ate, pred = additive_prediction(cells, np.array([[1, 1, 0, 0]]))
    >>> ate.shape, pred.shape
    ((1, 10), (1, 5, 10))
    """
    ate, control = _additive_parts(train, dosage, target_sum)
    return ate, control[None, :, :] + ate[:, None, :]


def _additive_parts(
    train: ad.AnnData, dosage: np.ndarray, target_sum: float = 1e4
) -> tuple[np.ndarray, np.ndarray]:
    """The additive baseline's effects ``[Q, G]`` and the training control cells ``[N_c, G]``
    (log-normalised; only the controls are made dense)."""
    d, names = read_dosage(train)
    y = log_normalise(read_counts(train[d.sum(1) == 0]), target_sum)
    # the DE reads only controls and single-perturbation cells: the pairs' cells are not copied
    de = differential_expression(train[d.sum(1) <= 1], target_sum=target_sum)
    shifts = de.reindex(names).fillna(0.0).to_numpy()  # [T, G], unknown singles: 0
    dosage = np.asarray(dosage, dtype=float).reshape(-1, len(names))
    return dosage @ shifts, y


@torch.no_grad()
def model_cells(
    model: PerturbVAE, dosage: np.ndarray, n_cells: int = 200, seed: int = 0,
    target_sum: float = 1e4,
) -> np.ndarray:
    """Cells drawn from a trained model under each dosage row, on the log-normalised scale.

    For each of ``n_cells`` particles: globals ``(M, E) ~ q``, basal noise ``z^b ~ N(0, I)``,
    ``z`` by the model's latent map (eq. 1 for SAMS-VAE), a library size from the training cells
    and NB counts with mean ``l softmax(f(z))`` (sec. 2.2); then ``log1p(target_sum x / l)``.
    Every row shares the particle's draws, as in the ATE.

    Returns
    -------
    numpy.ndarray
        ``[Q, n_cells, G]``.

    Examples
    --------
    >>> from liftkit.perturb import SAMSVAE
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> model = SAMSVAE(cells_from_truth(truth, np.eye(4)[[0, 1, 2, 3]]), n_latent=2, hidden=8)
    >>> model_cells(model, np.eye(4)[:2], n_cells=5).shape
    (2, 5, 10)
    """
    module, dev = model.module, model.device
    module.eval()
    gen = torch.Generator(device=dev).manual_seed(seed)
    design = torch.as_tensor(model._design(np.asarray(dosage, np.float32)), device=dev)
    glob = module.sample_globals(n_cells, generator=gen)
    u = torch.randn((n_cells, 1, module.n_latent), device=dev, generator=gen)
    log_rho = module.decode_log_rho(module.latent_from_noise(u, glob, design), design)
    pick = torch.randint(len(model.library_sizes), (n_cells, 1, 1), device=dev, generator=gen)
    mu = (log_rho + model.library_sizes[pick].log()).exp()  # [n, Q, G]
    theta = module.log_theta.exp()
    rate = torch._standard_gamma(theta.expand_as(mu).contiguous(), generator=gen)
    counts = torch.poisson(rate * mu / theta, generator=gen)
    y = torch.log1p(target_sum * counts / counts.sum(-1, keepdim=True).clamp_min(1.0))
    return y.transpose(0, 1).cpu().numpy()


def energy_distance(
    predicted: np.ndarray | torch.Tensor, observed: np.ndarray | torch.Tensor,
    groups: np.ndarray,
) -> np.ndarray:
    """Energy distance between each predicted population and its observed group of cells.

    ``D(X, Y) = (2 E|X - Y| - E|X - X'| - E|Y - Y'|)^{1/2}`` with Euclidean norms and the
    empirical (V-statistic) means, the convention of ``scipy.stats.energy_distance`` in one
    dimension (Szekely & Rizzo). Zero iff the two distributions agree; all groups at once:
    batched ``torch.cdist`` over the groups, each group's observed cells padded to the largest
    group, so memory and time grow with the groups' sizes, not with the square of all test cells.

    Parameters
    ----------
    predicted
        ``[Q, n, G]``: ``n`` predicted cells per group.
    observed
        ``[M, G]`` observed cells.
    groups
        ``[M]`` the group ``0..Q-1`` of each observed cell (-1: none).

    Returns
    -------
    numpy.ndarray
        ``[Q]`` (NaN for a group without observed cells).

    Examples
    --------
    >>> energy_distance(np.zeros((1, 3, 1)), np.ones((2, 1)), np.array([0, 0]))
    array([1.41421356])
    """
    x = torch.as_tensor(np.asarray(predicted), dtype=torch.float64)
    g = np.asarray(groups, dtype=np.int64)
    q, n = x.shape[0], x.shape[1]
    # each group's observed cells padded to the largest group: [Q, m_max, G] and a 0/1 mask, so
    # only within-group distances are computed (not all M x M pairs of the test cells)
    rows = np.flatnonzero(g >= 0)
    rows = rows[np.argsort(g[rows], kind="stable")]
    m_np = np.bincount(g[rows], minlength=q)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(m_np) - m_np, m_np)
    y = torch.zeros((q, max(int(m_np.max(initial=0)), 1), x.shape[2]), dtype=torch.float64)
    y[g[rows], slot] = torch.as_tensor(np.asarray(observed)[rows], dtype=torch.float64)
    mask = torch.zeros(y.shape[:2], dtype=torch.float64)
    mask[g[rows], slot] = 1.0
    m = torch.as_tensor(m_np, dtype=torch.float64)
    mode = "donot_use_mm_for_euclid_dist"
    exx = torch.cdist(x, x, compute_mode=mode).mean((1, 2))
    exy = (torch.cdist(x, y, compute_mode=mode) * mask[:, None, :]).sum((1, 2))
    eyy = (torch.cdist(y, y, compute_mode=mode) * mask[:, :, None] * mask[:, None, :]).sum((1, 2))
    d2 = 2 * exy / (n * m) - exx - eyy / m**2
    return torch.where(m > 0, d2.clamp_min(0).sqrt(), torch.nan).numpy()


def score_predictions(
    ate: np.ndarray, cells: np.ndarray, test: ad.AnnData, dosage: np.ndarray,
    top_k: int = 10,
) -> pd.DataFrame:
    """Score predicted combinations against the held-out cells that carry them.

    Per dosage row: ATE-Pearson against the data DE (:func:`combination_de`, SAMS-VAE sec.
    3.2) on all genes and on the ``top_k`` genes by ``|DE|``, and the :func:`energy_distance`
    between the predicted and the observed cells (log-normalised). A constant prediction (all
    genes moved equally, e.g. no known member) has no correlation and scores 0.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> test = combination_screen(truth, np.array([[0, 1]]), 0, 20, 20)
    >>> dose = np.array([[1.0, 1, 0, 0]])
    >>> de, _ = combination_de(test, dose)
    >>> out = score_predictions(de.to_numpy(), np.zeros((1, 4, 10)), test, dose, top_k=5)
    >>> float(out["ate_pearson"].iloc[0])
    1.0
    """
    de, n = combination_de(test, dosage)
    full = ate_pearson(np.asarray(ate), de.to_numpy())["per_perturbation"]
    top = ate_pearson(np.asarray(ate), de.to_numpy(), top_k=top_k)["per_perturbation"]
    d, _ = read_dosage(test)
    hit = (d[:, None, :] == np.asarray(dosage, np.float32)[None]).all(-1)  # [M, Q]
    groups = np.where(hit.any(1), hit.argmax(1), -1)
    energy = energy_distance(cells, log_normalise(read_counts(test)), groups)
    return pd.DataFrame({"combination": de.index, "n_cells": n,
                         "ate_pearson": np.nan_to_num(full), "ate_pearson_top": np.nan_to_num(top),
                         "energy": energy})


def pair_dosage(split: pd.DataFrame, n_perts: int) -> np.ndarray:
    """Dosage rows ``[K, T]`` of the pairs of a :func:`combination_split` frame.

    Examples
    --------
    >>> pair_dosage(pd.DataFrame({"a": [0], "b": [2]}), 3)
    array([[1., 0., 1.]], dtype=float32)
    """
    dose = np.zeros((len(split), n_perts), np.float32)
    dose[np.arange(len(split))[:, None], split[["a", "b"]].to_numpy()] = 1.0
    return dose


def predict_combinations(
    source: PerturbVAE | str, dosage: np.ndarray, *, train: ad.AnnData | None = None,
    truth: dict[str, Any] | None = None, interaction: dict[str, Any] | None = None,
    n_cells: int = 200, ate_particles: int = 200, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted effects ``[Q, G]`` and cells ``[Q, n_cells, G]`` (log-normalised) of dosage rows.

    ``source`` is a trained model (its ATE, sec. 3.2, and :func:`model_cells`), ``"additive"``
    (:func:`additive_prediction` on ``train``; ``n_cells`` of its shifted control cells) or
    ``"truth"``: fresh cells from the true model (:func:`cells_from_truth`, with the
    ``interaction``), the best any model can do against a finite held-out sample.

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> ate, cells = predict_combinations("truth", np.eye(4)[:1], truth=truth, n_cells=6)
    >>> ate.shape, cells.shape
    ((1, 10), (1, 6, 10))
    """
    dosage = np.asarray(dosage, np.float32)
    q = len(dosage)
    if isinstance(source, PerturbVAE):
        ate = source.average_treatment_effect(dosage, n_particles=ate_particles, seed=seed)
        return ate.to_numpy(), model_cells(source, dosage, n_cells, seed)
    if source == "additive":
        ate, control = _additive_parts(train, dosage)  # shifted control cells, as in
        pick = np.random.default_rng(seed).choice(len(control), min(n_cells, len(control)),
                                                  replace=False)  # additive_prediction
        return ate, control[np.sort(pick)][None, :, :] + ate[:, None, :]
    if source == "truth":
        rows = np.vstack([np.zeros((n_cells, dosage.shape[1]), np.float32),
                          np.repeat(dosage, n_cells, axis=0)])
        fresh = cells_from_truth(truth, rows, seed + 104729, interaction)
        de, _ = combination_de(fresh, dosage)
        y = log_normalise(read_counts(fresh))[n_cells:]
        return de.to_numpy(), y.reshape(q, n_cells, -1)
    raise ValueError(f"source must be a model, 'additive' or 'truth', got {source!r}")


def combination_iwelbo(model: PerturbVAE, test: ad.AnnData, dosage: np.ndarray,
                       n_particles: int = 50, seed: int = 0) -> np.ndarray:
    """Mean test IWELBO (SAMS-VAE eqs. 6-7) of each dosage row's held-out cells, ``[Q]``.

    Examples
    --------
    >>> from liftkit.perturb import SAMSVAE
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells = combination_screen(truth, np.array([[0, 1]]), 2, 3, 2)
    >>> model = SAMSVAE(cells, n_latent=2, hidden=8)
    >>> combination_iwelbo(model, cells, np.array([[1.0, 1, 0, 0]]), n_particles=2).shape
    (1,)
    """
    d, _ = read_dosage(test)
    hit = (d[:, None, :] == np.asarray(dosage, np.float32)[None]).all(-1).astype(float)  # [M, Q]
    cells = hit.any(1)
    per_cell = model.iwelbo(test[cells], n_particles=n_particles, seed=seed)
    return (hit[cells].T @ per_cell) / np.maximum(hit[cells].sum(0), 1)


def run_combinations(
    screen: ad.AnnData, split: pd.DataFrame, truth: dict[str, Any] | None, *,
    models: list[tuple[str, str]], fractions: list[float] | None = None,
    seeds: list[int] | None = None, fit_kw: dict[str, Any] | None = None,
    eval_kw: dict[str, Any] | None = None, device: str = "auto",
) -> pd.DataFrame:
    """Fit every model to every training fraction and seed; score the held-out combinations.

    One row per (source, fraction, seed, held-out combination): ``category`` (seen2/1/0),
    ``ate_pearson``, ``ate_pearson_top``, ``energy``, and for models ``iwelbo`` and the training
    record (``steps``, ``best_step``, ``bound_by_budget``, ``cpu_seconds``). Sources: each of
    ``models`` (``(name, guide)``, fitted by :func:`liftkit.perturb.experiment.fit_model` with
    early stopping), the additive baseline and the truth (the ceiling; left out when ``truth`` is
    None, a measured screen).

    Examples
    --------
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> pairs = np.array([[0, 1], [0, 2], [1, 3], [2, 3]])
    >>> screen = combination_screen(truth, pairs, 30, 30, 60)
    >>> split = combination_split(pairs, 4, n_unseen=0)
    >>> out = run_combinations(screen, split, truth, models=[], eval_kw=dict(n_cells=20))
    >>> sorted(out["source"].unique())
    ['additive baseline', 'truth']
    """
    from liftkit.perturb.experiment import fit_model  # experiment imports the models' stack

    ev = {**dict(n_cells=200, ate_particles=200, iwelbo_particles=50, top_k=10), **(eval_kw or {})}
    screen = _counts_only(screen)  # the splits below copy the counts, not X as well
    held = split[split["test"]]
    dosage = pair_dosage(held, screen.obsm["dosage"].shape[1])
    ceiling: list[tuple[str, Any]] = [("truth", "truth")] if truth is not None else []
    frames = []
    for seed in seeds or [0]:
        for frac in fractions or [1.0]:
            train, test = split_screen(screen, split, frac, seed=seed)
            sources: list[tuple[str, Any]] = [*ceiling, ("additive baseline", "additive")]
            for name, guide in models:
                sources.append((name, fit_model(name, guide, train, seed=seed, device=device,
                                                **(fit_kw or {}))))
            for label, source in sources:
                ate, cells = predict_combinations(
                    source, dosage, train=train, truth=truth, n_cells=ev["n_cells"],
                    ate_particles=ev["ate_particles"], seed=seed)
                frame = score_predictions(ate, cells, test, dosage, ev["top_k"])
                frame = frame.assign(source=label, fraction=frac, seed=seed,
                                     category=held["category"].to_numpy())
                if isinstance(source, PerturbVAE):
                    frame["iwelbo"] = combination_iwelbo(source, test, dosage,
                                                         ev["iwelbo_particles"], seed)
                    frame = frame.assign(**_record(source))
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _counts_only(screen: ad.AnnData) -> ad.AnnData:
    """The screen without ``X`` (log-normalised counts for a loaded screen, a copy of the counts
    for a simulated one), which no step of :func:`run_combinations` reads: every step reads
    ``layers["counts"]``. A screen without that layer is returned as it is."""
    if screen.X is None or "counts" not in screen.layers:
        return screen
    return ad.AnnData(obs=screen.obs, var=screen.var, uns=screen.uns,
                      layers={"counts": screen.layers["counts"]}, obsm=dict(screen.obsm))


def _record(model: PerturbVAE) -> dict[str, Any]:
    """A fit's training record as columns (steps, best step, bound by its budget, CPU s)."""
    rec = model.record
    return dict(steps=rec.steps, best_step=rec.best_step, bound_by_budget=rec.bound_by_budget,
                cpu_seconds=rec.cpu_seconds)

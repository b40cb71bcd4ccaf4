"""AnnData-facing models of the SAMS-VAE family (scvi-tools style: a model wraps a torch module).

``SAMSVAE(adata, guide="corr").train(...)`` reads counts from a layer and perturbation dosages
from ``.obsm`` (:mod:`liftkit.perturb.setup`), trains its module
(:mod:`liftkit.perturb.modules`) by minibatch SVI on the loss of
:func:`~liftkit.perturb.objectives.negative_elbo` (SAMS-VAE App. A.1), and exposes the
evaluation of section 3: :meth:`PerturbVAE.iwelbo` (eqs. 6-7),
:meth:`PerturbVAE.average_treatment_effect` (sec. 3.2), :meth:`PerturbVAE.mask_probabilities`
and :meth:`PerturbVAE.embedding_means` (Figure 2).

Each model class names its module class; everything else is shared.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from liftkit.perturb import evaluation, objectives
from liftkit.perturb.modules import (
    ConditionalVAEModule,
    CPAVAEModule,
    PerturbModule,
    SAMSVAEModule,
    SVAEPlusModule,
)
from liftkit.perturb.setup import Conditions, CountRows, dosage_rows, read_counts, read_dosage
from liftkit.perturb.training import StoppingRule, TrainingRecord, fit_module
from liftkit.utils import resolve_device, set_seed


class PerturbVAE:
    """Base class of the SAMS-VAE family on AnnData; use a subclass below.

    Parameters
    ----------
    adata
        Training cells: raw counts in ``adata.layers[layer]``, dosages in
        ``adata.obsm[dosage_key]``.
    layer, dosage_key
        Where counts and dosages are (:func:`~liftkit.perturb.setup.read_counts`,
        :func:`~liftkit.perturb.setup.read_dosage`).
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    seed
        Seeds the network initialisation.
    **module_kwargs
        Passed to the module class: ``guide`` (``"mf"``, ``"corr_basal"``, ``"corr_emb"`` or
        ``"corr"``, SAMS-VAE sec. 2.3), ``n_latent``, ``hidden``, ``n_layers``, ``likelihood``
        (``"nb"``, ``"poisson"`` or ``"normal"``), ``emb_layers`` (depth of the ``q(E | M)``
        network of the correlated-embedding families), and for models with masks
        ``mask_prior`` (``"bernoulli"``, collapsed ``"beta"`` or non-collapsed
        ``"beta_bernoulli"``), ``alpha``, ``beta_ab``, ``temperature``, ``mask_init``.
    """

    #: The pure-torch module this model trains.
    module_class: ClassVar[type[PerturbModule]]

    def __init__(
        self,
        adata: ad.AnnData,
        *,
        layer: str | None = "counts",
        dosage_key: str = "dosage",
        device: str = "auto",
        seed: int = 0,
        **module_kwargs: Any,
    ) -> None:
        if not hasattr(self, "module_class"):
            raise TypeError(
                "PerturbVAE is a base class: use SAMSVAE, CPAVAE, ConditionalVAE or SVAEPlus"
            )
        self.layer, self.dosage_key = layer, dosage_key
        self.device = resolve_device(device)
        # Training counts and dosages stay sparse (CSR); each minibatch is made dense on the
        # device, so a screen's [N, G] counts and [N, T] dosages are never dense.
        x = read_counts(adata, layer, sparse=True)
        d, names = read_dosage(adata, dosage_key, sparse=True)
        self.perturbation_names = names
        self.gene_names = list(map(str, adata.var_names))
        self._set_conditions(d)
        design = self._design(d)
        set_seed(seed)
        self.module = self.module_class(x.shape[1], design.shape[1], **module_kwargs)
        self.module.to(self.device)
        self._x = CountRows(x, self.device)
        self._d = CountRows(design, self.device)
        self.module.set_input_stats(self._x)
        self.n_t = self._d.sum(0)
        self.library_sizes = self._x.sum(1)
        self.history: list[float] = []
        self.record: TrainingRecord | None = None

    # ------------------------------------------------------------------ data
    def _set_conditions(self, d: np.ndarray | sp.csr_matrix) -> None:
        """What the module's ``T`` indexes: here the perturbations themselves."""
        self.condition_names = self.perturbation_names

    def _design(self, d: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
        """Dosages ``[N, T]`` as the module sees them (checked against the training names),
        of the type given (dense or CSR)."""
        if d.shape[1] != len(self.perturbation_names):
            raise ValueError(
                f"dosage has {d.shape[1]} perturbations, the model was trained on "
                f"{len(self.perturbation_names)}"
            )
        return d

    def _tensors(self, adata: ad.AnnData | None) -> tuple[CountRows, CountRows]:
        """Counts and module dosages of ``adata`` (None: the training cells), as CSR rows that
        are made dense a chunk at a time (:class:`~liftkit.perturb.setup.CountRows`)."""
        if adata is None:
            return self._x, self._d
        x = read_counts(adata, self.layer, sparse=True)
        if x.shape[1] != self.module.n_genes:
            raise ValueError(f"adata has {x.shape[1]} genes, the model {self.module.n_genes}")
        d, _ = read_dosage(adata, self.dosage_key, sparse=True)
        return CountRows(x, self.device), CountRows(self._design(d), self.device)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_steps: int | None = None,
        batch_size: int = 256,
        lr: float = 3e-3,
        weight_decay: float = 1e-6,
        n_particles: int = 1,
        seed: int = 0,
        show_progress: bool = True,
        *,
        max_epochs: float | None = None,
        validation: ad.AnnData | None = None,
        val_particles: int = 1,
        eval_every: int = 50,
        patience: int = 10,
        min_delta: float = 0.01,
        lr_schedule: str = "constant",
        clip_norm: float | None = None,
        mask_lr: float | None = None,
    ) -> list[float]:
        """Adam on the minibatch loss of SAMS-VAE App. A.1
        (:func:`~liftkit.perturb.objectives.negative_elbo`), with optional validation.

        Paper (App. A.3): lr 3e-4, weight decay 1e-6, batch 512, 150k steps, the checkpoint
        (every 2,000 steps) with the best validation ELBO kept. Here: the best evaluation is
        kept and the fit stops early; the budget in epochs, the schedule, clipping and a
        separate mask rate are our choices (:mod:`liftkit.perturb.training`).

        Parameters
        ----------
        max_steps, max_epochs
            The budget in steps, or in epochs (passes over the training cells); one of them
            (default: 1000 steps).
        batch_size, lr, weight_decay, n_particles, seed
            Minibatch size, Adam's rate and weight decay, particles ``P`` of the loss, and the
            seed of the minibatches and of the sampling noise.
        show_progress
            A progress bar (also subject to ``LIFTKIT_PROGRESS``).
        validation
            Held-out cells; without them the fit runs its whole budget and keeps its last
            weights.
        val_particles, eval_every, patience, min_delta
            Validation value (negative per-cell IWELBO with ``val_particles``), evaluated every
            ``eval_every`` steps; stop after ``patience`` evaluations without an improvement of
            ``min_delta`` nats per cell (:class:`~liftkit.perturb.training.StoppingRule`).
        lr_schedule, clip_norm
            ``"constant"``, ``"plateau"`` or ``"cosine"``; gradient-norm clipping (None: off).
        mask_lr
            Learning rate of the mask logits (None: ``lr``;
            :func:`~liftkit.perturb.training.param_groups`).

        Returns
        -------
        list of float
            The per-step losses (negative minibatch ELBO per cell), also appended to
            ``self.history``; the :class:`~liftkit.perturb.training.TrainingRecord` is
            ``self.record``.
        """
        n = self._x.shape[0]
        max_steps = self._budget(max_steps, max_epochs, min(batch_size, n), n)
        if batch_size < 1 or n_particles < 1 or eval_every < 1:
            raise ValueError("batch_size, n_particles and eval_every must be >= 1")
        set_seed(seed)
        val = None if validation is None else self._tensors(validation)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            x, d = self._x[idx], self._d[idx]
            return objectives.negative_elbo(self.module, x, d, self.n_t, n_particles)

        losses, self.record = fit_module(
            self.module, loss_fn, n, max_steps=max_steps, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, seed=seed, val=val, val_particles=val_particles,
            eval_every=eval_every, stopping=StoppingRule(patience, min_delta),
            lr_schedule=lr_schedule, clip_norm=clip_norm, mask_lr=mask_lr,
            show_progress=show_progress,
        )
        self.history.extend(losses)
        return losses

    @staticmethod
    def _budget(max_steps: int | None, max_epochs: float | None, batch_size: int, n: int = 0
                ) -> int:
        """Steps of a budget given in steps or in epochs."""
        if max_steps is not None and max_epochs is not None:
            raise ValueError("give the budget as max_steps or as max_epochs, not both")
        if max_epochs is not None:
            if max_epochs <= 0:
                raise ValueError(f"max_epochs must be > 0, got {max_epochs}")
            return max(1, math.ceil(max_epochs * max(1, n // batch_size)))
        steps = 1000 if max_steps is None else max_steps
        if steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {steps}")
        return steps

    # ------------------------------------------------------------------ evaluation
    def iwelbo(
        self,
        adata: ad.AnnData | None = None,
        n_particles: int = 100,
        seed: int = 0,
        max_elements: int = 2**24,
    ) -> np.ndarray:
        """Per-cell IWELBO with ``K = n_particles`` (SAMS-VAE eqs. 6-7) of ``adata`` (None:
        the training cells); see :func:`liftkit.perturb.objectives.iwelbo`."""
        x, d = self._tensors(adata)
        return objectives.iwelbo(
            self.module, x, d, n_particles, seed=seed, max_elements=max_elements
        )

    def basal_latent(self, adata: ad.AnnData | None = None) -> np.ndarray:
        """Guide mean of each cell's basal state ``z^b`` (conditional VAE: of ``z``),
        ``[N, D]``; see :meth:`~liftkit.perturb.modules.PerturbModule.basal_mean`."""
        x, d = self._tensors(adata)
        self.module.eval()
        return self.module.basal_mean(x[:], d[:]).cpu().numpy()

    def posterior_predictive(self, adata: ad.AnnData | None = None, seed: int = 0) -> np.ndarray:
        """One posterior predictive replicate of each cell's counts, ``[N, G]`` (sec. 2.2), for
        predictive checks; see :meth:`~liftkit.perturb.modules.PerturbModule.posterior_predictive`."""
        x, d = self._tensors(adata)
        self.module.eval()
        gen = torch.Generator(device=x.device).manual_seed(seed)
        with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
            torch.manual_seed(seed)
            return self.module.posterior_predictive(x[:], d[:], gen).cpu().numpy()

    @torch.no_grad()
    def sample_counts(
        self,
        perturbations: list[str] | np.ndarray | None = None,
        n_cells: int = 100,
        library_size: float | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Counts of new cells drawn from the fitted model under given dosages (sec. 2.2).

        For each of ``n_cells`` draws: globals ``(M, E) ~ q``, basal state ``z^b ~ N(0, I)``,
        the latent by the model's map (eq. 1 for SAMS-VAE), a library size (drawn from the
        training cells, or ``library_size``) and counts from the likelihood with mean
        ``l softmax(f(z))`` (:meth:`~liftkit.perturb.modules.PerturbModule.draw_counts`).
        Every dosage row shares the draw's globals and basal state, as in the ATE.

        Parameters
        ----------
        perturbations
            Names of single perturbations (default: all) or a dosage matrix ``[Q, T]``; an
            all-zero row is a control cell.
        n_cells
            Cells per dosage row.
        library_size
            A fixed library size (None: drawn from the training cells).
        seed
            Seed of every draw.

        Returns
        -------
        numpy.ndarray
            ``[Q, n_cells, G]`` counts (Normal likelihood: real values).
        """
        if perturbations is None:
            perturbations = list(self.perturbation_names)
        dose, _ = dosage_rows(perturbations, self.perturbation_names)
        design = torch.as_tensor(self._design(dose), device=self.device)
        module = self.module
        module.eval()
        gen = torch.Generator(device=self.device).manual_seed(seed)
        glob = module.sample_globals(n_cells, generator=gen)
        u = torch.randn((n_cells, 1, module.n_latent), device=self.device, generator=gen)
        log_rho = module.decode_log_rho(module.latent_from_noise(u, glob, design), design)
        if library_size is None:
            pick = torch.randint(len(self.library_sizes), (n_cells, 1, 1), device=self.device,
                                 generator=gen)
            lib = self.library_sizes[pick]
        else:
            lib = torch.full((n_cells, 1, 1), float(library_size), device=self.device)
        counts = module.draw_counts(log_rho.exp() * lib, gen)  # [n, Q, G]
        return counts.transpose(0, 1).cpu().numpy()

    @torch.no_grad()
    def mask_probabilities(self) -> pd.DataFrame:
        """``q(m_t = 1)``, perturbations (SVAE+: conditions) x latent dims (Figure 2).

        CPA-VAE's masks are fixed to 1; the conditional VAE has none (ValueError).
        """
        p = self.module.mask_probs().cpu().numpy()
        return pd.DataFrame(p, index=self.condition_names)

    @torch.no_grad()
    def embedding_means(self) -> pd.DataFrame:
        """Expected latent offset ``E[e_t * m_t]``, perturbations x latent dims (Figure 2).

        With correlated embeddings, the mean of ``q(e_t | m_t)`` at the thresholded mask; the
        conditional VAE has no embeddings (ValueError).
        """
        shift = self.module.mean_effect()
        return pd.DataFrame(shift.cpu().numpy(), index=self.condition_names)

    def average_treatment_effect(
        self,
        perturbations: list[str] | np.ndarray | None = None,
        n_particles: int = 1000,
        n_samples: int = 1,
        target_sum: float = 1e4,
        seed: int = 0,
        max_elements: int = 2**24,
    ) -> pd.DataFrame:
        """Model ATE on log-normalised expression (SAMS-VAE sec. 3.2).

        Parameters
        ----------
        perturbations
            Names of single perturbations (default: all), or a dosage matrix (rows x T).
        n_particles, n_samples, target_sum, seed, max_elements
            See :func:`liftkit.perturb.evaluation.average_treatment_effect`.

        Returns
        -------
        pandas.DataFrame
            Perturbations x genes.
        """
        if perturbations is None:
            perturbations = list(self.perturbation_names)
        dose, index = dosage_rows(perturbations, self.perturbation_names)
        design = torch.as_tensor(self._design(dose), device=self.device)
        ate = evaluation.average_treatment_effect(
            self.module,
            design,
            self.library_sizes,
            n_particles=n_particles,
            n_samples=n_samples,
            target_sum=target_sum,
            seed=seed,
            max_elements=max_elements,
        )
        return pd.DataFrame(ate, index=index, columns=self.gene_names)

    def __repr__(self) -> str:
        m = self.module
        return (
            f"{type(self).__name__}(guide={m.guide!r}, genes={m.n_genes}, "
            f"perturbations={m.n_perts}, latent={m.n_latent}, steps={len(self.history)})"
        )


class SAMSVAE(PerturbVAE):
    """SAMS-VAE (SAMS-VAE eqs. 1-2): sparse additive latent shifts with Bernoulli masks."""

    module_class = SAMSVAEModule


class CPAVAE(PerturbVAE):
    """CPA-VAE (SAMS-VAE sec. 2.4): SAMS-VAE with every mask fixed to 1."""

    module_class = CPAVAEModule


class ConditionalVAE(PerturbVAE):
    """Conditional VAE baseline: ``z ~ N(0, I)``, encoder on ``[x, d]``, decoder on ``[z, d]``."""

    module_class = ConditionalVAEModule


class SVAEPlus(PerturbVAE):
    """SVAE+ baseline (App. A.2.2): one condition per cell, sparse mask on its latent shift.

    ``z ~ N(m_c * e_c, I)`` with point-estimated shifts; see
    :class:`~liftkit.perturb.modules.SVAEPlusModule`. Each distinct non-empty dosage row of the
    training cells is a condition (:class:`~liftkit.perturb.setup.Conditions`), so combinations
    unseen in training cannot be scored.
    """

    module_class = SVAEPlusModule

    def _set_conditions(self, d: np.ndarray | sp.csr_matrix) -> None:
        self.conditions = Conditions(d, self.perturbation_names)
        self.condition_names = self.conditions.names

    def _design(self, d: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
        """Dosages as one-hot training conditions ``[N, C]`` (CSR for CSR dosages)."""
        return self.conditions.design(d)


#: The models of SAMS-VAE Table 1 by their paper names.
MODELS: dict[str, type[PerturbVAE]] = {
    "SAMS-VAE": SAMSVAE,
    "CPA-VAE": CPAVAE,
    "Conditional VAE": ConditionalVAE,
    "SVAE+": SVAEPlus,
}

"""SAMS-VAE family on AnnData (Bereket & Karaletsos, SAMS-VAE), split as in scvi-tools.

- :mod:`~liftkit.perturb.setup`: AnnData setup and checks (``read_counts``, ``read_dosage``).
- :mod:`~liftkit.perturb.modules`: one pure-torch module per model (``SAMSVAEModule``,
  ``CPAVAEModule``, ``ConditionalVAEModule``, ``SVAEPlusModule``) on a shared base.
- :mod:`~liftkit.perturb.guides`: the variational families of section 2.3.
- :mod:`~liftkit.perturb.distributions`: priors, samplers and the NB likelihood of sec. 2.2.
- :mod:`~liftkit.perturb.nets`: the residual MLP and the decoder.
- :mod:`~liftkit.perturb.objectives`: minibatch ELBO (App. A.1) and IWELBO (eqs. 6-7).
- :mod:`~liftkit.perturb.evaluation`: model ATE and data DE (section 3.2).
- :mod:`~liftkit.perturb.model`: the AnnData-facing ``SAMSVAE``, ``CPAVAE``,
  ``ConditionalVAE``, ``SVAEPlus``.
- :mod:`~liftkit.perturb.training`: the training loop (validation, early stopping, best-weight
  restore, budget in epochs, schedules; App. A.3).
- :mod:`~liftkit.perturb.simulate`: ``simulate_perturb_seq``, perturb-seq with known masks.
- :mod:`~liftkit.perturb.experiment`: the Table 1 experiment (``python -m
  liftkit.perturb.experiment table1`` writes the converged table with provenance) and the
  mask-settling study.

Every equation, section and appendix number in this subpackage is the SAMS-VAE paper's (the LIFT
numbers of :mod:`liftkit.lift` and the book's Derivations appendix are a different sequence).

Examples
--------
>>> from liftkit.perturb import SAMSVAE, simulate_perturb_seq
>>> adata = simulate_perturb_seq(n_cells=200, n_genes=20, n_latent=4, n_pathways=2,
...                              perts_per_pathway=2)
>>> model = SAMSVAE(adata, guide="corr", n_latent=4, hidden=16)
>>> losses = model.train(5, batch_size=64, show_progress=False)
>>> model.iwelbo(adata[:3], n_particles=4).shape
(3,)
"""

from liftkit.perturb.evaluation import average_treatment_effect, differential_expression
from liftkit.perturb.guides import GUIDES
from liftkit.perturb.model import (
    CPAVAE,
    MODELS,
    SAMSVAE,
    ConditionalVAE,
    PerturbVAE,
    SVAEPlus,
)
from liftkit.perturb.modules import (
    ConditionalVAEModule,
    CPAVAEModule,
    PerturbModule,
    SAMSVAEModule,
    SVAEPlusModule,
)
from liftkit.perturb.objectives import iwelbo, minibatch_elbo, negative_elbo
from liftkit.perturb.setup import read_counts, read_dosage
from liftkit.perturb.simulate import simulate_perturb_seq

__all__ = [
    "CPAVAE",
    "CPAVAEModule",
    "GUIDES",
    "MODELS",
    "SAMSVAE",
    "SAMSVAEModule",
    "SVAEPlus",
    "SVAEPlusModule",
    "ConditionalVAE",
    "ConditionalVAEModule",
    "PerturbModule",
    "PerturbVAE",
    "average_treatment_effect",
    "differential_expression",
    "iwelbo",
    "minibatch_elbo",
    "negative_elbo",
    "read_counts",
    "read_dosage",
    "simulate_perturb_seq",
]

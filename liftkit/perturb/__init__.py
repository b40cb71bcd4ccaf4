"""SAMS-VAE family on AnnData (Bereket & Karaletsos, SAMS-VAE).

- :mod:`~liftkit.perturb.simulate`: ``simulate_perturb_seq``, perturb-seq with known masks.
- :mod:`~liftkit.perturb.module`: pure-torch priors, guides, decoder, minibatch ELBO.
- :mod:`~liftkit.perturb.model`: ``SAMSVAE``, ``CPAVAE``, ``ConditionalVAE``, ``SVAEPlus``.
- :mod:`~liftkit.perturb.evaluation`: ``iwelbo``, ``average_treatment_effect``,
  ``differential_expression``.
"""

from liftkit.perturb.evaluation import average_treatment_effect, differential_expression, iwelbo
from liftkit.perturb.model import (
    CPAVAE,
    MODELS,
    SAMSVAE,
    ConditionalVAE,
    PerturbVAE,
    SVAEPlus,
    read_counts,
    read_dosage,
)
from liftkit.perturb.module import PerturbVAEModule, minibatch_elbo
from liftkit.perturb.simulate import simulate_perturb_seq

__all__ = [
    "CPAVAE",
    "MODELS",
    "SAMSVAE",
    "ConditionalVAE",
    "PerturbVAE",
    "PerturbVAEModule",
    "SVAEPlus",
    "average_treatment_effect",
    "differential_expression",
    "iwelbo",
    "minibatch_elbo",
    "read_counts",
    "read_dosage",
    "simulate_perturb_seq",
]

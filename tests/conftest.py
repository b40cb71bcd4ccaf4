"""Shared fixtures: the repository root and a throw-away chapter writer."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LIFTKIT_PROGRESS", "0")

FRONT_MATTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def write_chapter(folder: Path, name: str, parameters: str, body: str, title: str = "Tiny") -> Path:
    """Write a minimal MyST chapter with a parameters cell and one body cell."""
    text = FRONT_MATTER + f"\n# {title}\n\n```{{code-cell}} ipython3\n:tags: [parameters]\n\n"
    text += textwrap.dedent(parameters).strip() + "\n```\n\n```{code-cell} ipython3\n"
    text += textwrap.dedent(body).strip() + "\n```\n"
    path = folder / f"{name}.md"
    path.write_text(text)
    return path


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def one_thread():
    """Small batches train fastest on one thread on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small():
    """A small simulated perturb-seq screen (300 cells x 20 genes, 6 perturbations) shared by
    the SAMS-VAE model, training and likelihood tests; one torch thread (make test sets it too)."""
    import torch

    from liftkit.perturb.simulate import simulate_perturb_seq

    torch.set_num_threads(1)
    return simulate_perturb_seq(
        n_cells=300, n_genes=20, n_latent=4, n_pathways=2, perts_per_pathway=3, seed=0
    )

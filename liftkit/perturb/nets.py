"""The networks of the SAMS-VAE family: a residual MLP and the decoder built on it (App. A.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResMLP(nn.Module):
    """MLP with residual hidden blocks and leaky-ReLU (SAMS-VAE App. A.3).

    ``n_layers`` hidden layers of width ``hidden``; layers after the first are residual
    (``h + act(W h)``). :meth:`forward` adds ``extra`` (already in hidden space) before the first
    activation: a concatenated input ``[x, y]`` is evaluated as ``W_x x + W_y y``, so a part
    shared across particles (``W_x x``) is computed once and broadcast.

    Parameters
    ----------
    d_in, d_out
        Input and output sizes; ``d_in = 0`` gives an MLP whose first layer is a learned bias
        (its input comes only through ``extra``).
    hidden, n_layers
        Width and number of hidden layers.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, n_layers: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, hidden) if d_in > 0 else None
        self.bias = nn.Parameter(torch.zeros(hidden)) if d_in == 0 else None
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers - 1))
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor | None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``out(... act(inp(x) + extra))``; ``x`` ``[..., d_in]``, ``extra`` ``[..., hidden]``."""
        h = self.inp(x) if self.inp is not None else self.bias
        if extra is not None:
            h = h + extra
        h = F.leaky_relu(h)
        for block in self.blocks:
            h = h + F.leaky_relu(block(h))
        return self.out(h)


class Decoder(nn.Module):
    """``f_theta``: latent ``z`` (and an optional condition ``c``) to gene logits (sec. 2.2).

    The softmax over genes that turns the logits into frequencies ``rho`` is left to the
    likelihood (:func:`~liftkit.perturb.distributions.nb_softmax_log_prob` fuses it).

    Parameters
    ----------
    n_latent, n_genes, hidden, n_layers
        ``D``, ``G`` and the :class:`ResMLP` width and depth.
    n_cond
        Size of the condition concatenated to ``z`` (the conditional VAE decodes ``[z, d]``,
        App. A.3); 0 for none.
    """

    def __init__(
        self, n_latent: int, n_genes: int, hidden: int, n_layers: int = 1, n_cond: int = 0
    ) -> None:
        super().__init__()
        # the condition layer is drawn before the MLP: a seed gives the initialisation it
        # gave when this layer belonged to the model itself
        self.cond = nn.Linear(n_cond, hidden, bias=False) if n_cond > 0 else None
        self.net = ResMLP(n_latent, n_genes, hidden, n_layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Gene logits ``[..., B, G]`` of ``z`` ``[..., B, D]`` and ``cond`` ``[B, n_cond]``."""
        extra = self.cond(cond) if self.cond is not None else None
        return self.net(z, extra)

"""The sequence CNN f_theta used by both LIFT and conventional training (LIFT Sec. 6, App. C).

The paper uses "the CNN of Weinstein et al. (2025)", whose details are not published. This
follows the closest public code (``causal-tcrs`` ``SeqEmbed('cnn')``; the book's Derivations appendix, section
"Values the paper lost", lists this and the other (S) choices):
one-hot input with all-zero padding, a 1-D convolution, SELU, a global max pool over positions
(padding excluded), a small MLP and a softplus so that f >= 0 (needed by the NB mean, eq. 6).

Choice (S): a learned position-dependent bias (one per channel and position) is added to the
convolution output before the max pool. A max-pooled convolution is otherwise translation
invariant, while the App. C patterns sit at fixed positions; ``positional=False`` gives the
plain network. (Equivalent to concatenating a learned position embedding to the input, and
cheaper on a CPU.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from liftkit.lift.library import PAD


class SeqCNN(nn.Module):
    """f_theta(x) >= 0 for padded token sequences.

    Parameters
    ----------
    max_len
        Width of the token tensors (the library's ``max_len``).
    channels
        Convolution channels.
    kernel
        Convolution width.
    hidden
        Width of the MLP hidden layer.
    positional
        Add the learned position-dependent bias. (S)
    init_f
        Initial output level (the final bias is set so f ~ init_f at start). (S)

    Raises
    ------
    ValueError
        A size below 1 or ``init_f <= 0``.

    Examples
    --------
    >>> from liftkit.lift.library import encode
    >>> net = SeqCNN(max_len=8)
    >>> f = net(encode(["CARW", "CAKDW"], max_len=8))
    >>> f.shape, bool((f >= 0).all())
    (torch.Size([2]), True)
    """

    def __init__(
        self,
        max_len: int = 32,
        channels: int = 32,
        kernel: int = 5,
        hidden: int = 32,
        positional: bool = True,
        init_f: float = 0.1,
    ) -> None:
        super().__init__()
        if min(max_len, channels, kernel, hidden) < 1 or init_f <= 0:
            raise ValueError(
                "max_len, channels, kernel, hidden must be >= 1 and init_f > 0"
            )
        self.max_len = max_len
        self.pos = nn.Parameter(torch.zeros(channels, max_len)) if positional else None
        self.conv = nn.Conv1d(PAD, channels, kernel, padding=kernel // 2)
        # one-hot by gathering rows of an identity (padding row all zero): no int->float copy
        self.register_buffer("eye", torch.eye(PAD + 1)[:, :PAD], persistent=False)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SELU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.mlp[-1].bias.fill_(math.log(math.expm1(init_f)))
            self.mlp[-1].weight.mul_(0.1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(n, L)`` tokens (``L <= max_len``) -> ``(n,)`` non-negative activities f(x)."""
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"tokens are {tokens.shape[1]} wide; this network takes <= {self.max_len}"
            )
        width = tokens.shape[1]
        x = self.eye[tokens].transpose(1, 2)  # one-hot, padding all zero: (n, 20, L)
        h = self.conv(x)
        if self.pos is not None:
            h = h + self.pos[:, :width]
        h = torch.selu(h)
        valid = (tokens != PAD)[:, None, :]
        h = h.masked_fill(~valid, -torch.inf)
        h = h.amax(dim=2)
        return nn.functional.softplus(self.mlp(h).squeeze(-1))

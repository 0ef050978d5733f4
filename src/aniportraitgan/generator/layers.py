"""Building blocks shared by the generator's sub-networks.

- ``MappingNetwork``: latent codes -> per-layer FiLM frequencies and phase shifts (pi-GAN style:
  LeakyReLU MLP, Kaiming init, last layer scaled down so that the frequencies start near their
  mean).
- ``FiLMSiren``: a stack of FiLM-conditioned sine layers, ``sin(f * (W x + b) + p)``, with the
  SIREN initialisation (first layer U(-1/in, 1/in), later ones U(-sqrt(6/in)/25, sqrt(6/in)/25),
  the pi-GAN variant tuned for frequencies around 30).

The mapping output ``w`` is kept as one flat tensor per batch item, so that the truncation
trick and the identity cache deal with a single tensor per network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# pi-GAN maps the raw mapping output f to the sine frequency 15 f + 30.
FREQ_SCALE = 15.0
FREQ_BIAS = 30.0


def siren_first_init_(layer: nn.Linear) -> None:
    with torch.no_grad():
        n = layer.weight.shape[1]
        layer.weight.uniform_(-1.0 / n, 1.0 / n)


def siren_hidden_init_(layer: nn.Linear, omega: float = 25.0) -> None:
    with torch.no_grad():
        n = layer.weight.shape[1]
        bound = math.sqrt(6.0 / n) / omega
        layer.weight.uniform_(-bound, bound)


class MappingNetwork(nn.Module):
    """MLP from a latent vector to a flat conditioning vector ``w`` of size ``out_dim``."""

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            lin = nn.Linear(a, b)
            nn.init.kaiming_normal_(lin.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(lin.bias)
            blocks += [lin, nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(dims[-1], out_dim)
        nn.init.kaiming_normal_(self.out.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        with torch.no_grad():
            self.out.weight.mul_(0.25)
        nn.init.zeros_(self.out.bias)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z))


class FiLMSiren(nn.Module):
    """``layers`` FiLM-SIREN layers of width ``hidden`` on inputs of size ``in_dim``.

    ``forward(x [B, N, in], w [B, 2 * layers * hidden])`` -> features [B, N, hidden]. ``w`` holds
    the raw frequencies of all layers first, then the phase shifts (as ``MappingNetwork`` emits).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(
            [nn.Linear(in_dim if i == 0 else hidden, hidden) for i in range(layers)]
        )
        siren_first_init_(self.linears[0])
        for lin in self.linears[1:]:
            siren_hidden_init_(lin)
        self.hidden = hidden
        self.num_layers = layers

    @property
    def w_dim(self) -> int:
        return 2 * self.num_layers * self.hidden

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ``w`` [B, w_dim] -> (frequencies, phases), each [B, layers, hidden]."""
        B = w.shape[0]
        half = self.num_layers * self.hidden
        freqs = w[:, :half].reshape(B, self.num_layers, self.hidden) * FREQ_SCALE + FREQ_BIAS
        phases = w[:, half:].reshape(B, self.num_layers, self.hidden)
        return freqs, phases

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        freqs, phases = self.split(w)
        h = x
        for i, lin in enumerate(self.linears):
            h = torch.sin(freqs[:, None, i] * lin(h) + phases[:, None, i])
        return h

"""An exponential moving average of the weights a training stage moves (``train.ema_decay``).

The averaged copy follows the trained weights after every optimiser step and takes their place when
the stage ends (model.training), so the student distils from the averaged teacher and the checkpoint
holds the averaged student. It reads the trained weights and touches nothing else: the trajectory of
a run, its random streams included, is the same with or without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    """The average of ``net``'s trainable parameters and floating-point buffers (BatchNorm statistics),
    with decay ``min(decay, (1 + n) / (10 + n))`` at the n-th update: early steps are not held back by
    the random start (the warm-up of common EMA implementations)."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.live: dict[str, torch.Tensor] = {n: p for n, p in net.named_parameters() if p.requires_grad}
        self.live |= {n: b for n, b in net.named_buffers() if b.is_floating_point()}
        self.average = {n: t.detach().clone() for n, t in self.live.items()}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, live in self.live.items():
            self.average[name].lerp_(live.detach(), weight)

    @torch.no_grad()
    def _exchange(self) -> None:
        for name, live in self.live.items():
            held = live.detach().clone()
            live.copy_(self.average[name])
            self.average[name].copy_(held)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the network for the duration (e.g. a validation), then back."""
        self._exchange()
        try:
            yield
        finally:
            self._exchange()

    @torch.no_grad()
    def copy_to_net(self) -> None:
        """The averaged weights into the network for good (the end of a stage)."""
        for name, live in self.live.items():
            live.copy_(self.average[name])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": {n: t.clone() for n, t in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["average"].keys() != self.average.keys():
            raise ValueError("the saved weight average covers other weights than this stage trains")
        self.updates = state["updates"]
        for name, tensor in state["average"].items():
            self.average[name].copy_(tensor)

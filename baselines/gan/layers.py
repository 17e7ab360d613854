"""Layers the conditional GANs share for reproducible noise: dropout drawn from explicit generators, and batch norm
that normalizes each sample by its own statistics at sampling time.

Why not nn.Dropout / nn.BatchNorm2d as they are: a generated sample must depend only on its condition and its own
seed (`derive_seed(seed, j)`), never on the global RNG nor on which other samples share its batch, so sample j can
be redone alone; and training must draw its masks from the step's generator (exact resume).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Noise = torch.Generator | Sequence[torch.Generator] | None
"""Where a forward pass draws its randomness: one generator for the whole batch (training: the step's), one per
sample (sampling: each sample's seed), or None (no randomness: dropout off)."""


def per_sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU torch generator per sample, seeded with its sample seed."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def uniform(shape: Sequence[int], noise: torch.Generator | Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
    """U[0, 1) of `shape` (batch first) drawn on the CPU from `noise`: one generator for all, or one per row."""
    if isinstance(noise, torch.Generator):
        return torch.rand(tuple(shape), generator=noise).to(device)
    if len(noise) != shape[0]:
        raise ValueError(f"{len(noise)} generators for a batch of {shape[0]}")
    return torch.stack([torch.rand(tuple(shape[1:]), generator=g) for g in noise]).to(device)


class SeededDropout(nn.Module):
    """Dropout (zero with probability p, scale the rest by 1 / (1 - p)) whose mask comes from `noise`; no noise, no
    dropout. pix2pix keeps dropout on at test time, its only source of randomness."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor, noise: Noise = None) -> torch.Tensor:
        if noise is None or self.p == 0.0:
            return x
        keep = uniform(x.shape, noise, x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SampleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d in training; outside training each sample is normalized by its own per-channel statistics (with
    the learned scale and shift), and the running statistics are neither used nor updated.

    That is pix2pix's test-time batch norm: its test script keeps the network in training mode at batch size 1,
    which normalizes each image by its own statistics ("instance normalization" in the pix2pix paper, sec. 3.2),
    and it makes a sample independent of the others in its batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

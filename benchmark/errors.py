"""Errors and warnings raised by the metric core (FD, KID, PRDC, memorization, streaming stats)."""

from __future__ import annotations

from histosynth.errors import InputError


class MetricInputError(InputError):
    """Bad input to a metric: wrong shape, too few samples, NaN/inf features, mismatched dimensions."""


class SmallSampleWarning(UserWarning):
    """A metric was computed on fewer samples than it needs to be reliable (e.g. N <= d for FD)."""


class DegenerateFeaturesWarning(UserWarning):
    """Features that make a metric meaningless or undefined: every sample identical, or empty k-NN balls."""

"""Shared metrics: each a pure function for one batch plus an accumulating :class:`Metric` class."""

from essence.metrics.base import Accuracy, Mean, Metric, accuracy

__all__ = ["Metric", "Mean", "Accuracy", "accuracy"]

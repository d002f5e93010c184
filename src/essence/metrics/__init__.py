"""Shared metrics: each a pure function for one batch plus an accumulating :class:`Metric` class.

Modules: ``base`` (Metric, accuracy), ``fid`` (FID with the offline Inception), ``retrieval`` (R@k/C, MRR),
``robustness`` (CE, mCE, relative mCE, FP, T5D), ``pitch`` (mir_eval multipitch / melody), ``knn`` (weighted kNN),
``linear_probe`` (the linear protocol on frozen features).
"""

from essence.metrics.base import Accuracy, Mean, Metric, accuracy
from essence.metrics.retrieval import RetrievalMetrics, mrr, recall_at_k

__all__ = ["Metric", "Mean", "Accuracy", "accuracy", "RetrievalMetrics", "recall_at_k", "mrr"]

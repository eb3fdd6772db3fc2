"""LightningModules that train fused backbones, their heads, metrics and prediction writers."""

from mmfuse.tasks.base import MultiModalTask
from mmfuse.tasks.heads import Head, LinearHead, MLPHead
from mmfuse.tasks.metrics import RegressionMetrics, format_table
from mmfuse.tasks.regression import RegressionTask
from mmfuse.tasks.writer import PredictionWriter

__all__ = [
    "Head",
    "LinearHead",
    "MLPHead",
    "MultiModalTask",
    "PredictionWriter",
    "RegressionMetrics",
    "RegressionTask",
    "format_table",
]

"""LightningModules that train fused backbones, their heads, metrics and prediction writers."""

from mmfuse.tasks.base import MultiModalTask

FusionTask = MultiModalTask  # the new name (the model-layer redesign in progress)
from mmfuse.tasks.checkpoint_io import AtomicCheckpointIO
from mmfuse.tasks.classification import ClassificationTask
from mmfuse.tasks.heads import Head, LinearHead, MLPHead
from mmfuse.tasks.metrics import ClassificationMetrics, MetricTable, RegressionMetrics, format_table
from mmfuse.tasks.regression import RegressionTask
from mmfuse.tasks.writer import PredictionWriter

__all__ = [
    "AtomicCheckpointIO",
    "ClassificationMetrics",
    "ClassificationTask",
    "FusionTask",
    "Head",
    "LinearHead",
    "MLPHead",
    "MetricTable",
    "MultiModalTask",
    "PredictionWriter",
    "RegressionMetrics",
    "RegressionTask",
    "format_table",
]

"""The Lightning task (model + objective + optimiser), objectives, heads, metrics, callbacks and prediction writers."""

from mmfuse.tasks.callbacks import EpochSummary, Evaluation, EvaluationReport, StepReseeding
from mmfuse.tasks.checkpoint_io import AtomicCheckpointIO
from mmfuse.tasks.heads import Head, LinearHead, MLPHead
from mmfuse.tasks.metrics import ClassificationMetrics, MetricTable, RegressionMetrics, format_table
from mmfuse.tasks.objectives import Classification, Objective, Regression
from mmfuse.tasks.task import ClassificationTask, FusionTask, RegressionTask
from mmfuse.tasks.writer import PredictionWriter

__all__ = [
    "AtomicCheckpointIO",
    "Classification",
    "ClassificationMetrics",
    "ClassificationTask",
    "EpochSummary",
    "Evaluation",
    "EvaluationReport",
    "FusionTask",
    "Head",
    "LinearHead",
    "MLPHead",
    "MetricTable",
    "Objective",
    "PredictionWriter",
    "Regression",
    "RegressionMetrics",
    "RegressionTask",
    "StepReseeding",
    "format_table",
]

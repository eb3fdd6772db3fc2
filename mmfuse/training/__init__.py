"""The Lightning task (model + objective + optimiser), objectives, heads, metrics, callbacks and prediction writers."""

from mmfuse.training.callbacks import EpochSummary, Evaluation, EvaluationReport, StepReseeding, Stop, StopOnSignal
from mmfuse.training.checkpoint_io import AtomicCheckpointIO
from mmfuse.training.heads import Head, LinearHead, MLPHead
from mmfuse.training.metrics import ClassificationMetrics, MetricTable, RegressionMetrics, format_table
from mmfuse.training.objectives import Classification, Objective, Regression
from mmfuse.training.task import ClassificationTask, FusionTask, RegressionTask, TokenClassificationTask
from mmfuse.training.token_objectives import TokenClassification
from mmfuse.training.writer import PredictionWriter

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
    "Stop",
    "StopOnSignal",
    "TokenClassification",
    "TokenClassificationTask",
    "format_table",
]

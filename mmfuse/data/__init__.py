"""Data modules, batching and the bundled sample data set (no model code here)."""

from mmfuse.data.classification import SequenceClassification
from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.isoform import IsoformExpression
from mmfuse.data.table import TableDataModule, read_table
from mmfuse.data.tissues import GTEX_TISSUES

__all__ = [
    "GTEX_TISSUES",
    "DataError",
    "IsoformExpression",
    "MultiModalCollate",
    "SequenceClassification",
    "TableDataModule",
    "read_table",
]

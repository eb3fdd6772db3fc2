"""Data modules, batching and the bundled sample data set (no model code here)."""

from mmfuse.data.classification import SequenceClassification
from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.isoform import IsoformExpression
from mmfuse.data.single_cell import CellClassification
from mmfuse.data.table import TableDataModule, read_table
from mmfuse.data.tf_binding import TFBinding
from mmfuse.data.tissues import GTEX_TISSUES

__all__ = [
    "GTEX_TISSUES",
    "CellClassification",
    "DataError",
    "IsoformExpression",
    "MultiModalCollate",
    "SequenceClassification",
    "TFBinding",
    "TableDataModule",
    "read_table",
]

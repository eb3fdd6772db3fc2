"""Data modules, batching and the bundled sample data set (no model code here)."""

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.datasets.classification import SequenceClassification
from mmfuse.data.datasets.gene_classification import GeneClassification
from mmfuse.data.datasets.isoform import IsoformExpression
from mmfuse.data.datasets.single_cell import CellClassification
from mmfuse.data.datasets.table import TableDataModule, read_table
from mmfuse.data.datasets.tf_binding import TFBinding
from mmfuse.data.errors import DataError
from mmfuse.data.genomics.tissues import GTEX_TISSUES

__all__ = [
    "GTEX_TISSUES",
    "CellClassification",
    "DataError",
    "GeneClassification",
    "IsoformExpression",
    "MultiModalCollate",
    "SequenceClassification",
    "TFBinding",
    "TableDataModule",
    "read_table",
]

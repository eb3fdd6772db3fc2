"""An example mmfuse plugin: a small convolutional nucleotide encoder and a gated-sum fusion adapter."""

from mmfuse_plugin_example.adapter import GatedSumFusion
from mmfuse_plugin_example.backbone import CharCNN

__all__ = ["CharCNN", "GatedSumFusion"]

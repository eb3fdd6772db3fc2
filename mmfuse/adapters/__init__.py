"""Fusion adapters: turn per-modality token embeddings into one representation."""

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.concat import ConcatFusion
from mmfuse.adapters.pooling import masked_mean

__all__ = ["ConcatFusion", "Features", "FusionAdapter", "masked_mean"]

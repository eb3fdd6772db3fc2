"""Fusion adapters: turn per-modality token embeddings into one representation."""

from mmfuse.adapters.base import Features, FusionAdapter, drop_modalities, presence
from mmfuse.adapters.c_abstractor import CAbstractor
from mmfuse.adapters.concat import ConcatFusion, TokenConcatFusion
from mmfuse.adapters.cross_attention import CrossAttentionFusion
from mmfuse.adapters.interaction import InteractionFusion
from mmfuse.adapters.perceiver import PerceiverResampler
from mmfuse.adapters.pooling import POOLINGS, AttentionPooling, Pooling, masked_max, masked_mean

__all__ = [
    "POOLINGS",
    "AttentionPooling",
    "CAbstractor",
    "ConcatFusion",
    "CrossAttentionFusion",
    "Features",
    "FusionAdapter",
    "InteractionFusion",
    "PerceiverResampler",
    "Pooling",
    "TokenConcatFusion",
    "drop_modalities",
    "masked_max",
    "masked_mean",
    "presence",
]

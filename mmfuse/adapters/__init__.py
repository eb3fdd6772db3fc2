"""Fusion adapters: turn per-modality token embeddings into one representation."""

from mmfuse.adapters.base import Features, FusionAdapter, drop_modalities, presence
from mmfuse.adapters.bilinear import BilinearFusion
from mmfuse.adapters.c_abstractor import CAbstractor
from mmfuse.adapters.concat import ConcatFusion, TokenConcatFusion
from mmfuse.adapters.cross_attention import CrossAttentionFusion
from mmfuse.adapters.gated import GatedFusion
from mmfuse.adapters.interaction import InteractionFusion
from mmfuse.adapters.mult import MulTFusion
from mmfuse.adapters.perceiver import PerceiverResampler
from mmfuse.adapters.pooling import POOLINGS, AttentionPooling, Pooling, masked_max, masked_mean
from mmfuse.adapters.qformer import QFormer
from mmfuse.adapters.tensor import LowRankTensorFusion

__all__ = [
    "POOLINGS",
    "AttentionPooling",
    "BilinearFusion",
    "CAbstractor",
    "ConcatFusion",
    "CrossAttentionFusion",
    "Features",
    "FusionAdapter",
    "GatedFusion",
    "InteractionFusion",
    "LowRankTensorFusion",
    "MulTFusion",
    "PerceiverResampler",
    "Pooling",
    "QFormer",
    "TokenConcatFusion",
    "drop_modalities",
    "masked_max",
    "masked_mean",
    "presence",
]

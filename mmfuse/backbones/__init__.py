"""Sequence encoders ("backbones"): the interface, the built-in architectures and their presets."""

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.borzoi import BORZOI_PRESETS, Borzoi
from mmfuse.backbones.builder import PretrainedBackbone, WeightsPlan, plan_weights
from mmfuse.backbones.context import ContextEmbedding
from mmfuse.backbones.enformer import ENFORMER_PRESETS, Enformer
from mmfuse.backbones.esm import ESM2, ESM2_PRESETS
from mmfuse.backbones.finetune import FineTuning, LoraOptions
from mmfuse.backbones.geneformer import GENEFORMER_PRESETS, Geneformer
from mmfuse.backbones.hf_encoder import HuggingFaceEncoder
from mmfuse.backbones.nucleotide_transformer import NT_PRESETS, NucleotideTransformer
from mmfuse.backbones.presets import Preset

__all__ = [
    "BORZOI_PRESETS",
    "ENFORMER_PRESETS",
    "ESM2",
    "ESM2_PRESETS",
    "GENEFORMER_PRESETS",
    "NT_PRESETS",
    "Backbone",
    "BackboneOutput",
    "Borzoi",
    "ContextEmbedding",
    "Enformer",
    "FineTuning",
    "Geneformer",
    "HuggingFaceEncoder",
    "LoraOptions",
    "NucleotideTransformer",
    "Preset",
    "PretrainedBackbone",
    "WeightsPlan",
    "plan_weights",
]

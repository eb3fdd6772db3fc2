"""The embedding cache of frozen backbones: the store on disk, the backbone reading it, the callback filling it."""

from mmfuse.cache.backbone import CachedBackbone, KeyTokenizer, cache_backbones
from mmfuse.cache.callback import EmbeddingCacheCallback, cached_backbones
from mmfuse.cache.store import CacheOptions, EmbeddingStore

__all__ = [
    "CacheOptions",
    "CachedBackbone",
    "EmbeddingCacheCallback",
    "EmbeddingStore",
    "KeyTokenizer",
    "cache_backbones",
    "cached_backbones",
]

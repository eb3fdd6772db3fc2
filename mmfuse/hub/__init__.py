"""Sharing a trained fusion model as a Hugging Face-style directory: export, load, predict, push.

:func:`~mmfuse.hub.export.export_task` (``mmfuse export``) writes a trained task as a directory
(:mod:`mmfuse.hub.layout`); :meth:`FusionModel.from_pretrained <mmfuse.model.FusionModel.from_pretrained>`
(:func:`~mmfuse.hub.load.load_pretrained`) builds it again from mmfuse's registries and checks every weight;
``model.predict`` (:mod:`mmfuse.hub.predict`) reads raw sequences as the data module did; ``mmfuse serve``
(:mod:`mmfuse.hub.serve`) answers HTTP requests with it.
"""

from mmfuse.errors import InputError
from mmfuse.hub.layout import PretrainedConfig, PretrainedError, is_exported, read_config
from mmfuse.hub.load import load_pretrained

__all__ = ["InputError", "PretrainedConfig", "PretrainedError", "is_exported", "load_pretrained", "read_config"]

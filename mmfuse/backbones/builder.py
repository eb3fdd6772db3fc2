"""The one builder of backbones with named checkpoints: preset, source, revision, pretrained or random.

In the direction of timm's ``build_model_with_cfg``: :func:`plan_weights` decides, from a preset record,
an optional ``source`` (hub id or local directory) and ``pretrained``, what is built and where its
weights come from, and :meth:`PretrainedBackbone._build_model` carries it out. An architecture supplies
only what differs: how to load a source (:meth:`~PretrainedBackbone._load_pretrained`), how to read a
source's config (:meth:`~PretrainedBackbone._read_config`) and how to build from a config
(:meth:`~PretrainedBackbone._from_config`); its tokenizer, :meth:`encode`, :meth:`blocks` and
:attr:`embed_dim` stay in its own file. The fine-tuning options are applied by
:meth:`Backbone._finish_init <mmfuse.backbones.base.Backbone._finish_init>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from mmfuse.backbones.base import Backbone
from mmfuse.backbones.presets import Preset, WeightsNotFoundError, get_preset, weights_error

__all__ = ["PretrainedBackbone", "WeightsPlan", "plan_weights"]


@dataclass(frozen=True)
class WeightsPlan:
    """What a backbone is built from.

    Attributes:
        preset: the preset record.
        source: the hub id or local directory read (its weights, or with ``pretrained`` false its
            config); ``None``: the preset's own ``config``, built at random.
        revision: hub revision pinned for ``source`` (the preset's, when its own hub id is read).
        pretrained: whether the weights of ``source`` are loaded.
    """

    preset: Preset
    source: str | None
    revision: str | None
    pretrained: bool

    @property
    def weights_source(self) -> str | None:
        """Where the weights come from (``Backbone.weights_source``); ``None`` for random weights."""
        return self.source if self.pretrained else None


def plan_weights(
    presets: Mapping[str, Preset], name: str, source: str | None, pretrained: bool, architecture: str
) -> WeightsPlan:
    """Resolves preset ``name`` of ``architecture`` and what to build from it.

    * ``pretrained`` and a source (``source``, else the preset's hub id): load that source's weights.
    * ``source`` given, ``pretrained`` false: that source's architecture (its config) with random weights.
    * otherwise (``pretrained`` false, or a preset without weights): the preset's ``config`` at random.

    Raises:
        ConfigError: unknown preset name (the message lists the known ones and the closest).

    Examples:
        >>> from mmfuse.backbones.esm import ESM2_PRESETS
        >>> plan = plan_weights(ESM2_PRESETS, "esm2_t6_8M_UR50D", None, True, "ESM2")
        >>> plan.source, plan.pretrained
        ('facebook/esm2_t6_8M_UR50D', True)
        >>> plan_weights(ESM2_PRESETS, "tiny", None, True, "ESM2").weights_source is None  # no weights
        True
        >>> plan_weights(ESM2_PRESETS, "tiny", "/data/esm2", False, "ESM2").source  # its config, at random
        '/data/esm2'
    """
    record = get_preset(presets, name, architecture)
    pretrained = pretrained and (source or record.source) is not None
    read = (source or record.source) if pretrained else source
    revision = record.revision if read is not None and source is None else None
    return WeightsPlan(preset=record, source=read, revision=revision, pretrained=pretrained)


class PretrainedBackbone(Backbone):
    """A backbone of one architecture whose checkpoints are :class:`~mmfuse.backbones.presets.Preset` records.

    A subclass sets :attr:`presets`, :attr:`default_preset` and :attr:`default_modality`, implements
    :meth:`_from_config` (and, where it has weights to load, :meth:`_load_pretrained` and
    :meth:`_read_config`), and in ``__init__`` calls ``super().__init__(modality or self.default_modality, finetune)``,
    ``self._build_model(preset, source, pretrained)``, sets its tokenizer and calls
    ``self._finish_init()``. ``preset: None`` (the default in YAML) means :attr:`default_preset`,
    ``modality: None`` :attr:`default_modality`.
    """

    #: the preset built when none is named
    default_preset: ClassVar[str] = "tiny"
    #: the modality read when none is named
    default_modality: ClassVar[str] = ""
    #: the preset record this backbone was built from
    preset: Preset
    model: nn.Module

    def _build_model(self, preset: str | None, source: str | None, pretrained: bool) -> WeightsPlan:
        """Builds :attr:`model` as :func:`plan_weights` decides; sets :attr:`preset` and ``weights_source``."""
        plan = plan_weights(self.presets, preset or self.default_preset, source, pretrained, type(self).__name__)
        self.preset = plan.preset
        try:
            if plan.pretrained:
                model = self._load_pretrained(plan.source, plan.revision)
            elif plan.source is not None:  # the architecture of a given checkpoint, without its weights
                model = self._from_config(self._read_config(plan.source, plan.revision))
            else:
                model = self._from_config(plan.preset.config)
        except WeightsNotFoundError:
            raise
        except OSError as exc:  # offline, unknown repository, gated model, missing directory
            raise weights_error(plan.source or plan.preset.name, exc) from exc
        self.model = model
        self.weights_source = self._weights_location(plan)
        return plan

    def _load_pretrained(self, source: str, revision: str | None) -> nn.Module:
        """The model with the weights of hub id or directory ``source``."""
        raise WeightsNotFoundError(f"{type(self).__name__} has no pretrained weights to load from {source!r}")

    def _read_config(self, source: str, revision: str | None) -> Any:
        """The architecture's config stored in ``source`` (given to :meth:`_from_config`)."""
        raise WeightsNotFoundError(f"{type(self).__name__} cannot read a config from {source!r}")

    def _from_config(self, config: Any) -> nn.Module:
        """A randomly initialised model from a preset's ``config`` mapping or what :meth:`_read_config` gives."""
        raise NotImplementedError

    def _weights_location(self, plan: WeightsPlan) -> str | None:
        """``weights_source`` of a backbone built from ``plan`` (where a rebuild finds the weights)."""
        return plan.weights_source

"""The multi-modal task skeleton: backbones keyed by modality → fusion adapter → head."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from mmfuse.adapters import ConcatFusion, FusionAdapter, drop_modalities
from mmfuse.backbones import Backbone
from mmfuse.checkpoints import CheckpointMismatchError, state_dict_mismatch
from mmfuse.errors import ConfigError
from mmfuse.tasks.heads import Head, MLPHead
from mmfuse.tokenizers import Tokenizer

__all__ = ["AdapterFactory", "HeadFactory", "MultiModalTask", "OptimizerFactory", "SchedulerFactory"]

#: builds the adapter once backbone widths are known: ``input_dims -> adapter``
AdapterFactory = Callable[[dict[str, int]], FusionAdapter]
#: builds the head once the fused width and the number of targets are known: ``(in_dim, out_dim) -> head``
HeadFactory = Callable[[int, int], Head]
OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class MultiModalTask(L.LightningModule):
    """Base LightningModule of mmfuse tasks.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data
            (``{dna: Enformer, rna: NucleotideTransformer, protein: ESM2}``).
        adapter: fusion adapter, built with the backbones' widths (default: ``ConcatFusion``).
        head: prediction head, built with the fused width and the number of targets (default: ``MLPHead``).
        target_names: names of the outputs; linked from the data module by the CLI.
        optimizer: optimizer over the trainable parameters (default: AdamW, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler, stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).
        modality_dropout: during training, hide each present modality of each sample with this
            probability (always keeping one), so the model learns to predict from any subset.
    """

    def __init__(
        self,
        backbones: dict[str, Backbone],
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        target_names: list[str] | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: SchedulerFactory | None = None,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self._save_plain_hyperparameters()
        if not backbones:
            raise ConfigError("a task needs at least one backbone (`backbones: {modality: ...}`)")
        if not target_names:
            raise ConfigError(
                "target_names is empty: the CLI links it from the data module; from Python pass "
                "target_names=datamodule.target_names"
            )
        self.target_names = list(target_names)
        self.backbones = nn.ModuleDict(backbones)
        dims = {m: b.embed_dim for m, b in backbones.items()}
        self.adapter = (adapter or ConcatFusion)(dims)
        self.head = (head or MLPHead)(self.adapter.output_dim, len(self.target_names))
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), not {modality_dropout}")
        self.modality_dropout = modality_dropout

    def _save_plain_hyperparameters(self) -> None:
        """Saves constructor arguments that are plain data; objects never go into checkpoints.

        Under the CLI every argument is plain (its config); from Python, modules and classes are
        left out, so ``torch.load(weights_only=True)`` can always read the checkpoint.
        """
        import inspect

        self.save_hyperparameters(frame=inspect.currentframe().f_back)  # type: ignore[union-attr]
        for key in [k for k, v in self.hparams.items() if not _is_plain(v)]:
            del self._hparams[key]
            self._hparams_initial.pop(key, None)

    # data ---------------------------------------------------------------------------------------
    def tokenizers(self) -> dict[str, Tokenizer]:
        """The tokenizer of each backbone, keyed by modality."""
        return {m: b.tokenizer for m, b in self.backbones.items()}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "attach_tokenizers"):
            datamodule.attach_tokenizers(self.tokenizers())

    # model --------------------------------------------------------------------------------------
    def forward(
        self, inputs: Mapping[str, Mapping[str, Tensor]], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Head outputs ``(B, n_outputs)`` from tokenized inputs ``{modality: tokenizer output}``.

        Args:
            inputs: one tokenizer output per modality; a modality that no sample of the batch has
                may be left out.
            present: ``{modality: (B,) bool}``, False where a sample lacks the modality (its slot
                holds a stand-in); default: every modality in ``inputs`` is present.
        """
        return self.head(self.fuse(inputs, present))

    def fuse(self, inputs: Mapping[str, Mapping[str, Tensor]], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """The adapter's fused representation ``(B, output_dim)``; see :meth:`forward`."""
        if not any(m in inputs for m in self.backbones):
            raise ValueError(f"the batch holds none of the modalities {sorted(self.backbones)}")
        batch = next(len(next(iter(inputs[m].values()))) for m in self.backbones if m in inputs)
        features = {}
        for modality, backbone in self.backbones.items():
            if modality not in inputs:  # no sample of this batch has it: nothing to encode
                empty = torch.zeros(batch, 1, backbone.embed_dim, device=self.device, dtype=self.dtype)
                features[modality] = (empty, torch.zeros(batch, 1, dtype=torch.bool, device=self.device))
                continue
            out = backbone(inputs[modality])
            mask = out.mask
            if present is not None and modality in present:
                mask = mask & present[modality].to(mask.device).unsqueeze(1)
            features[modality] = (out.embeddings, mask)
        if self.training and self.modality_dropout > 0:
            features = drop_modalities(features, self.modality_dropout)
        return self.adapter(features)

    # optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    # checkpoints ----------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checks the checkpoint's weights against this model before Lightning loads them."""
        problem = state_dict_mismatch(self.state_dict(), checkpoint.get("state_dict", {}))
        if problem:
            raise CheckpointMismatchError(
                f"the checkpoint does not fit the model built from this config: {problem}. Use the config "
                f"the checkpoint was trained with (saved beside it as config.yaml)."
            )

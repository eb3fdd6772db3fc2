"""Token classification: labels that belong to the tokens of one modality (the genes of a cell, a protein's residues).

Geneformer's gene classification (Theodoris et al. 2023) fine-tunes on labelled genes: each cell's rank value
encoding is the input and every token whose gene carries a label is classified. :class:`TokenClassification` is
that objective for any modality: the batch's ``target`` is int64 ``(B, L)``, aligned with the modality's tokens,
:data:`IGNORE` where a token has no label (padding, special tokens, unlabelled genes, genes of other splits);
the loss and the metrics count the labelled tokens only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmfuse.data.token_labels import IGNORE
from mmfuse.errors import ConfigError
from mmfuse.registry import OBJECTIVES
from mmfuse.training.objectives import Classification

__all__ = ["IGNORE", "TokenClassification"]


@OBJECTIVES.register()
class TokenClassification(Classification):
    """Classification of the tokens of one modality into ``target_names``; the other tokens are ignored.

    The model's head reads each token's embedding, concatenated (``context``) with the adapter's fused
    representation of its record, and gives ``(B, L, outputs)``: one logit per token with two classes, one
    per class with more, as :class:`~mmfuse.training.objectives.Classification`. The loss, metrics and
    predictions are :class:`~mmfuse.training.objectives.Classification`'s over the labelled tokens, flattened:
    accuracy, F1 and AUROC overall and per class (with support, in tokens), so ``mmfuse test`` reports them per
    class. Predictions are one row per labelled token (or per token the data module names, ``batch["tokens"]``:
    a gene of a cell), with its record id, the token, the class probabilities, the predicted and the true class.

    Args:
        target_names: the class names, in class-index order (given by the task).
        modality: the modality whose tokens are labelled; default: the model's only backbone.
        context: concatenate each token's embedding with the record's fused representation before the head,
            so the record's other tokens and modalities inform it; ``False``: the token's embedding alone.
        label_smoothing: as :class:`~mmfuse.training.objectives.Classification`'s.
        class_weights: as :class:`~mmfuse.training.objectives.Classification`'s.

    Examples:
        >>> objective = TokenClassification(["background", "marker"])
        >>> outputs = torch.tensor([[[2.0], [-1.0], [0.0]]])  # (B=1, L=3, one logit)
        >>> target = torch.tensor([[1, IGNORE, 0]])           # the second token has no label
        >>> round(objective.loss(outputs, target).item(), 4)
        0.41
    """

    def __init__(
        self,
        target_names: Sequence[str],
        modality: str | None = None,
        context: bool = True,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__(target_names, label_smoothing, class_weights)
        self.modality, self.context = modality, context

    def token_head(self, modalities: Sequence[str]) -> tuple[str, bool]:
        """The labelled modality (``modality``, or the only backbone's) and ``context``."""
        if self.modality is None:
            if len(modalities) != 1:
                raise ConfigError(
                    f"TokenClassification needs to know whose tokens are labelled: the model reads "
                    f"{sorted(modalities)}; set model.init_args.objective.init_args.modality to one of them"
                )
            self.modality = modalities[0]
        if self.modality not in modalities:
            raise ConfigError(
                f"TokenClassification's modality {self.modality!r} has no backbone; set "
                f"model.init_args.objective.init_args.modality to one of {sorted(modalities)}"
            )
        return self.modality, self.context

    def predict(self, outputs: Tensor) -> Tensor:
        """Class probabilities ``(..., n_classes)`` of logits ``(..., outputs)`` (per record or per token)."""
        flat = super().predict(outputs.reshape(-1, outputs.shape[-1]))
        return flat.reshape(*outputs.shape[:-1], flat.shape[-1])

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The classification loss of the labelled tokens of ``outputs`` ``(B, L, outputs)``; 0 (with a graph)
        when no token of the batch has a label."""
        picked, labels = _labelled(outputs, target)
        if labels.numel() == 0:
            return outputs.sum() * 0.0
        return super().loss(picked, labels)

    def update(self, stage: str, outputs: Tensor, target: Tensor) -> None:
        picked, labels = _labelled(outputs, target)
        if labels.numel():
            super().update(stage, picked, labels)

    def batch_prediction(self, outputs: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """One row per token the data module names (``batch["tokens"]``: ``position`` ``(N, 2)`` of
        (record, token), the token ``values`` and the column ``name``, e.g. ``gene``), else per labelled token
        (named by its position); with ``token`` names and the ``true`` class (empty where unknown)."""
        target = batch.get("target")
        tokens = batch.get("tokens")
        if tokens is not None:
            position = tokens["position"].to(outputs.device).long()
            name, values = tokens["name"], list(tokens["values"])
        else:
            if target is None:
                raise ValueError("token predictions need the batch's `tokens` or its token labels (`target`)")
            position = torch.nonzero(target.to(outputs.device) != IGNORE)
            name, values = "token", [str(int(i)) for i in position[:, 1].tolist()]
        rows, columns = position[:, 0], position[:, 1]
        prediction = self.prediction(outputs[rows, columns], [batch["ids"][i] for i in rows.tolist()])
        truth = target.to(outputs.device)[rows, columns].tolist() if target is not None else [IGNORE] * len(values)
        prediction.update(token_column=name, tokens=values,
                          true=[self.target_names[t] if t >= 0 else "" for t in truth])  # fmt: skip
        return prediction


def _labelled(outputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The outputs ``(N, outputs)`` and labels ``(N,)`` of the labelled tokens of ``(B, L, outputs)``."""
    target = target.to(outputs.device).long()
    if target.shape != outputs.shape[:-1]:
        raise ValueError(
            f"token labels {tuple(target.shape)} do not line up with the head's outputs {tuple(outputs.shape)}: "
            f"the data module's labels must follow the labelled modality's tokens"
        )
    keep = target != IGNORE
    return outputs[keep], target[keep]

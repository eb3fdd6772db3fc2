"""The fusion model as a plain PyTorch module: backbones keyed by modality → fusion adapter → head.

No Lightning here (see ARCHITECTURE.md): :class:`FusionModel` trains in any loop. The Lightning task
(:class:`~mmfuse.training.FusionTask`) owns one, with an objective and an optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.adapters import ConcatFusion, FusionAdapter, drop_modalities
from mmfuse.backbones import Backbone
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import Tokenizer

__all__ = ["AdapterFactory", "FusionModel", "HeadFactory"]

#: builds the adapter once backbone widths are known: ``input_dims -> adapter``
AdapterFactory = Callable[[dict[str, int]], FusionAdapter]
#: builds the head once the fused width and the number of outputs are known: ``(in_dim, out_dim) -> head``
HeadFactory = Callable[[int, int], nn.Module]


class FusionModel(nn.Module):
    """Backbones keyed by modality, a fusion adapter and a head: tokenized inputs to ``(B, num_outputs)``.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data
            (``{"rna": NucleotideTransformer(...), "protein": ESM2(...)}``).
        num_outputs: width of the head's output.
        adapter: builds the fusion adapter from the backbones' widths (default: ``ConcatFusion``).
        head: builds the head from the fused width and ``num_outputs`` (default: one ``nn.Linear``;
            the tasks default to :class:`~mmfuse.training.heads.MLPHead`).
        modality_dropout: in training mode, hide each present modality of each sample with this
            probability (always keeping one), so the model learns to predict from any subset.
        token_modality: the modality whose tokens are predicted (token classification: the genes of a
            cell): the head reads each of its tokens, ``(B, L, D)``, and gives ``(B, L, num_outputs)``;
            ``None``: one output row per record from the fused representation.
        token_context: with ``token_modality``, each token's embedding is concatenated with the adapter's
            fused representation of its record (the head's input is ``D + adapter.output_dim`` wide), so
            the record's other tokens and modalities inform each token's prediction; ``False``: the token
            alone (the adapter is then unused).

    Examples:
        >>> from mmfuse.backbones import ESM2, NucleotideTransformer
        >>> model = FusionModel({"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")}, num_outputs=3)
        >>> tok = model.tokenizers()
        >>> inputs = {"rna": tok["rna"](["ACGUACGU", "AUG"]), "protein": tok["protein"](["MKV", "MA"])}
        >>> model.eval()(inputs, present={"protein": torch.tensor([True, False])}).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        backbones: Mapping[str, Backbone],
        num_outputs: int,
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        modality_dropout: float = 0.0,
        token_modality: str | None = None,
        token_context: bool = True,
    ) -> None:
        super().__init__()
        if not backbones:
            raise ConfigError("a model needs at least one backbone (`backbones: {modality: ...}`)")
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), not {modality_dropout}")
        self.backbones = nn.ModuleDict(dict(backbones))
        if token_modality is not None and token_modality not in backbones:
            raise ConfigError(
                f"the token modality {token_modality!r} has no backbone; the backbones read {sorted(backbones)}"
            )
        self.adapter = (adapter or ConcatFusion)({m: b.embed_dim for m, b in backbones.items()})
        in_dim = self.adapter.output_dim
        if token_modality is not None:
            in_dim = backbones[token_modality].embed_dim + (self.adapter.output_dim if token_context else 0)
        self.head = (head or nn.Linear)(in_dim, num_outputs)
        self.modality_dropout = modality_dropout
        self.token_modality, self.token_context = token_modality, token_context

    def tokenizers(self) -> dict[str, Tokenizer]:
        """The tokenizer of each backbone, keyed by modality (what the data module's collate runs)."""
        return {m: b.tokenizer for m, b in self.backbones.items()}

    def encode(
        self, inputs: Mapping[str, Mapping[str, Any]], present: Mapping[str, Tensor] | None = None
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``{modality: (embeddings (B, L, D), mask (B, L))}``; a sample's absent modality is fully masked.

        Args:
            inputs: one tokenizer output per modality; a modality no sample of the batch has may be left
                out (it comes back as one masked token per sample).
            present: ``{modality: (B,) bool}``, False where a sample lacks the modality (its slot holds a
                stand-in); default: every modality in ``inputs`` is present.
        """
        given = [m for m in self.backbones if m in inputs]
        if not given:
            raise ValueError(f"the batch holds none of the modalities {sorted(self.backbones)}")
        batch = len(next(iter(inputs[given[0]].values())))
        reference = next(self.parameters())
        features = {}
        for modality, backbone in self.backbones.items():
            if modality not in inputs:  # no sample of this batch has it: nothing to encode
                empty = torch.zeros(batch, 1, backbone.embed_dim, device=reference.device, dtype=reference.dtype)
                features[modality] = (empty, torch.zeros(batch, 1, dtype=torch.bool, device=reference.device))
                continue
            out = backbone(inputs[modality])
            mask = out.mask
            if present is not None and modality in present:
                mask = mask & present[modality].to(mask.device).unsqueeze(1)
            features[modality] = (out.embeddings, mask)
        return features

    def fuse(self, inputs: Mapping[str, Mapping[str, Any]], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """The adapter's fused representation ``(B, output_dim)``; see :meth:`encode`."""
        return self.fuse_features(self.encode(inputs, present))

    def fuse_features(self, features: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """The adapter's fused representation of encoded features (after modality dropout, in training)."""
        if self.training and self.modality_dropout > 0:
            features = drop_modalities(features, self.modality_dropout)
        return self.adapter(features)

    def outputs(self, features: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """Head outputs of encoded features: ``(B, num_outputs)``, or ``(B, L, num_outputs)`` per token of
        ``token_modality`` (``L``: its tokens, as its tokenizer gave them)."""
        if self.token_modality is None:
            return self.head(self.fuse_features(features))
        tokens = features[self.token_modality][0]
        if self.token_context:
            fused = self.fuse_features(features).to(tokens.dtype)
            tokens = torch.cat([tokens, fused.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)
        return self.head(tokens)

    def forward(self, inputs: Mapping[str, Mapping[str, Any]], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Head outputs ``(B, num_outputs)`` (per token: ``(B, L, num_outputs)``) of tokenized inputs
        ``{modality: tokenizer output}``."""
        return self.outputs(self.encode(inputs, present))

    # sharing (mmfuse.hub) -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, trust_remote_code: bool = False,
                        revision: str | None = None, cache_dir: str | None = None) -> FusionModel:  # fmt: skip
        """A model exported by ``mmfuse export`` (a directory, or a Hugging Face hub id holding one), in eval mode.

        Its components are built by name from mmfuse's registries (no code of the directory runs), its weights are
        checked against the checksums of its ``config.json``, and it gains ``objective`` (predictions in the
        training data's units) and ``pretrained`` (the :class:`~mmfuse.hub.PretrainedConfig`), so that
        :meth:`predict` reads raw sequences. A config setting ``trust_remote_code`` is refused unless
        ``trust_remote_code=True`` is passed here.
        """
        from mmfuse.hub.load import load_pretrained

        return load_pretrained(cls, path, device, trust_remote_code, revision, cache_dir)

    def save_pretrained(self, directory: str, overwrite: bool = False) -> str:
        """Writes this model (loaded with :meth:`from_pretrained`, perhaps trained further) as an export."""
        from mmfuse.hub.export import save_pretrained

        return str(save_pretrained(self, directory, overwrite))

    def push_to_hub(self, repo_id: str, private: bool = True, token: str | None = None,
                    commit_message: str = "Upload mmfuse model") -> str:  # fmt: skip
        """Uploads this model's export to the Hugging Face hub repository ``repo_id`` (created if needed; private
        by default); returns the commit's URL. Only when asked: nothing in mmfuse uploads by itself."""
        from mmfuse.hub.push import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message)

    def predict(self, records: Any, batch_size: int = 32) -> Any:
        """Predictions of raw sequences, as ``mmfuse predict`` writes them: a pandas DataFrame, one row per record
        (``id``, one column per target, or class probabilities and ``predicted``).

        Args:
            records: ``[{modality: sequence}, …]`` (a modality may be missing; ``id`` names a record) or
                ``{modality: [sequences]}``. Every record is checked first (:class:`~mmfuse.errors.InputError`).
        """
        from mmfuse.hub.predict import predict_frame

        return predict_frame(self, records, batch_size)

    def predict_rows(self, records: Any, batch_size: int = 32) -> list[dict[str, Any]]:
        """:meth:`predict` as JSON-ready rows, one dict per record."""
        from mmfuse.hub.predict import predict_rows

        return predict_rows(self, records, batch_size)

    def check_records(self, records: Any) -> list[dict[str, Any]]:
        """The records as :meth:`predict` reads them, each checked (:class:`~mmfuse.errors.InputError`)."""
        from mmfuse.hub.predict import check_records

        return check_records(self, records)

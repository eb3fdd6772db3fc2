"""CharCNN: a small residual convolutional encoder of nucleotide sequences, one embedding per letter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor, nn

from mmfuse.backbones import BackboneOutput, FineTuning, Preset, PretrainedBackbone
from mmfuse.backbones.presets import preset_table
from mmfuse.tokenizers import CharTokenizer

LETTERS = "ACGTUN"  # U reads as T: the encoder serves DNA and RNA alike

PRESETS = preset_table(
    Preset(name="tiny", source=None, config={"dim": 32, "depth": 2, "kernel_size": 5}, embed_dim=32,
           max_tokens=4096, modality="dna", license="Apache-2.0", paper="mmfuse-plugin-example"),
    Preset(name="small", source=None, config={"dim": 128, "depth": 4, "kernel_size": 9}, embed_dim=128,
           max_tokens=16384, modality="dna", license="Apache-2.0", paper="mmfuse-plugin-example"),
)  # fmt: skip


class _Block(nn.Module):
    """Residual block: depth-wise convolution, GELU, a linear mixing layer (``proj``)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.proj(nn.functional.gelu(h))


class _CharCNNModel(nn.Module):
    """Letter embedding, residual blocks, a final norm; padding stays zero between blocks."""

    def __init__(self, dim: int, depth: int, kernel_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(LETTERS) + 1, dim, padding_idx=0)
        self.layers = nn.ModuleList(_Block(dim, kernel_size) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.embed(ids.clamp(min=0))
        keep = mask.unsqueeze(-1).to(x.dtype)
        for block in self.layers:
            x = block(x) * keep
        return self.norm(x) * keep


class CharCNN(PretrainedBackbone):
    """A small residual CNN over nucleotides (random weights; an example of a plugin backbone).

    :class:`~mmfuse.backbones.PretrainedBackbone` resolves the preset (unknown names get the list of
    known ones); this class supplies only how to build its model from a preset's config, its
    tokenizer, :meth:`encode`, :meth:`blocks` and :attr:`embed_dim`. The fine-tuning options
    (``finetune: {freeze: true}``, ``train_last_layers``, ``lora``, ``gradient_checkpointing``) work
    from :meth:`blocks` and :attr:`lora_targets` alone.

    Args:
        preset: ``tiny`` (32 wide, 2 blocks) or ``small`` (128 wide, 4 blocks).
        modality: the modality this encoder reads.
        finetune: which weights train (:class:`~mmfuse.backbones.FineTuning`; LoRA's default
            target: each block's ``proj``).

    Examples:
        >>> backbone = CharCNN("tiny", finetune=FineTuning(train_last_layers=1))
        >>> out = backbone(backbone.tokenizer(["ACGTU", "AC"]))
        >>> tuple(out.embeddings.shape), out.mask.sum(1).tolist()
        ((2, 5, 32), [5, 2])
    """

    presets: ClassVar[Mapping[str, Preset]] = PRESETS
    default_preset = "tiny"
    padding_invariant = False  # the convolutions see padding next to the sequence's ends
    lora_targets = ("proj",)

    def __init__(self, preset: str = "tiny", modality: str = "dna", finetune: FineTuning | None = None) -> None:
        super().__init__(modality, finetune)
        self._build_model(preset, source=None, pretrained=False)  # random weights: nothing to download
        ids = [1 + LETTERS.index(c) if c != "U" else 1 + LETTERS.index("T") for c in LETTERS]
        self.tokenizer = CharTokenizer("CharCNN", LETTERS, ids, pad_id=0, max_tokens=self.preset.max_tokens)
        self._finish_init()

    def _from_config(self, config: Mapping[str, int]) -> nn.Module:
        return _CharCNNModel(config["dim"], config["depth"], config["kernel_size"])

    @property
    def embed_dim(self) -> int:
        return int(self.preset.config["dim"])

    def blocks(self) -> list[nn.Module]:
        return list(self.model.layers)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        return BackboneOutput(self.model(batch["input_ids"], mask), mask)

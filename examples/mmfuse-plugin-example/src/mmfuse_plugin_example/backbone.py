"""CharCNN: a small residual convolutional encoder of nucleotide sequences, one embedding per letter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor, nn

from mmfuse.backbones import Backbone, BackboneOutput, Preset
from mmfuse.backbones.finetune import LoraOptions
from mmfuse.backbones.presets import get_preset
from mmfuse.tokenizers import CharTokenizer

LETTERS = "ACGTUN"  # U reads as T: the encoder serves DNA and RNA alike

PRESETS = {
    "tiny": Preset("tiny", None, {"dim": 32, "depth": 2, "kernel_size": 5}, embed_dim=32, max_tokens=4096,
                   modality="dna", license="Apache-2.0", paper="mmfuse-plugin-example"),  # fmt: skip
    "small": Preset("small", None, {"dim": 128, "depth": 4, "kernel_size": 9}, embed_dim=128, max_tokens=16384,
                    modality="dna", license="Apache-2.0", paper="mmfuse-plugin-example"),  # fmt: skip
}


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


class CharCNN(Backbone):
    """A small residual CNN over nucleotides (random weights; an example of a plugin backbone).

    Args:
        preset: ``tiny`` (32 wide, 2 blocks) or ``small`` (128 wide, 4 blocks).
        modality: the modality this encoder reads.
        freeze: keep the weights fixed and the module in eval mode.
        train_last_layers: train only the last N blocks.
        lora: adapt with LoRA (default target: each block's ``proj``); only the LoRA matrices train.
        gradient_checkpointing: recompute block activations in the backward pass (less memory).
    """

    presets: ClassVar[Mapping[str, Preset]] = PRESETS
    padding_invariant = False  # the convolutions see padding next to the sequence's ends
    lora_targets = ("proj",)

    def __init__(
        self,
        preset: str = "tiny",
        modality: str = "dna",
        freeze: bool = False,
        train_last_layers: int | None = None,
        lora: LoraOptions | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(modality, freeze, train_last_layers, lora, gradient_checkpointing)
        self.preset = get_preset(PRESETS, preset, "CharCNN")
        config = self.preset.config
        self.embed = nn.Embedding(len(LETTERS) + 1, config["dim"], padding_idx=0)
        self.layers = nn.ModuleList(_Block(config["dim"], config["kernel_size"]) for _ in range(config["depth"]))
        self.norm = nn.LayerNorm(config["dim"])
        ids = [1 + LETTERS.index(c) if c != "U" else 1 + LETTERS.index("T") for c in LETTERS]
        self.tokenizer = CharTokenizer("CharCNN", LETTERS, ids, pad_id=0, max_tokens=self.preset.max_tokens)
        self._finish_init()

    @property
    def embed_dim(self) -> int:
        return int(self.preset.config["dim"])

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        x = self.embed(batch["input_ids"].clamp(min=0))
        keep = mask.unsqueeze(-1).to(x.dtype)
        for block in self.layers:
            x = block(x) * keep  # padding stays zero between blocks
        return BackboneOutput(self.norm(x) * keep, mask)

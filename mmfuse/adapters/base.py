"""The fusion-adapter interface: per-modality token embeddings in, one representation out.

Missing modalities are expressed through the masks alone: a sample whose mask row is all ``False``
for a modality lacks that modality (a non-coding transcript has no protein). Every adapter must then
ignore that modality for that sample completely: its output may not depend on what stands in the
absent slot. :meth:`FusionAdapter.forward` zeroes every masked position before the adapter's
:meth:`~FusionAdapter.fuse` sees it, so even NaN in a padded or absent slot cannot leak through.

It also hands :meth:`~FusionAdapter.fuse` the embeddings in the dtype of the adapter's parameters.
Under mixed precision some backbones return bfloat16 embeddings (Enformer, Borzoi) and others
float32; in the parameters' dtype (float32) residual sums and pooled sums are not rounded to
bfloat16 at every step, while autocast still runs the matrix products in bfloat16.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError

__all__ = ["Features", "FusionAdapter", "drop_modalities", "presence"]

#: ``{modality: (embeddings (B, L_m, D_m), mask (B, L_m))}``
Features = Mapping[str, tuple[Tensor, Tensor]]


class FusionAdapter(nn.Module, ABC):
    """Base class of fusion adapters.

    Adapters are built by the task once the backbones exist: their first constructor argument is
    ``input_dims`` (``{modality: D_m}``), which YAML never repeats. In a config an adapter is written
    with its remaining options only::

        adapter:
          class_path: ConcatFusion
          init_args: {hidden_dim: 256}

    Subclasses implement :meth:`fuse` and :attr:`output_dim`; :meth:`forward` checks the input
    against ``input_dims`` and zeroes masked positions first.

    Args:
        input_dims: embedding width of each modality, keyed like the backbones.
    """

    def __init__(self, input_dims: Mapping[str, int]) -> None:
        super().__init__()
        if not input_dims:
            raise ConfigError("a fusion adapter needs at least one modality")
        bad = [m for m in input_dims if not m or "." in m or "__" in m]
        if bad:
            raise ConfigError(f"modality names must be non-empty, without '.' or '__': {bad}")
        self.input_dims = dict(input_dims)
        self.modalities = sorted(self.input_dims)

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Width of the fused representation."""

    @abstractmethod
    def fuse(self, features: Features) -> Tensor:
        """Fuses checked features (masked positions zeroed, in the parameters' dtype) into ``(B, output_dim)``."""

    def forward(self, features: Features) -> Tensor:
        """Fuses ``{modality: (embeddings (B, L_m, D_m), mask (B, L_m))}`` into ``(B, output_dim)``.

        Raises:
            KeyError: a modality the adapter was built for is missing from ``features``.
            ValueError: a width, mask shape or batch size that does not fit.
        """
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"{type(self).__name__} was built for {self.modalities} but got no features for {missing}")
        clean: dict[str, tuple[Tensor, Tensor]] = {}
        batch = None
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        for m in self.modalities:
            x, mask = features[m]
            if x.ndim != 3 or x.shape[-1] != self.input_dims[m]:
                raise ValueError(
                    f"{m} embeddings have shape {tuple(x.shape)}; {type(self).__name__} expects "
                    f"(batch, length, {self.input_dims[m]})"
                )
            if mask.shape != x.shape[:2]:
                raise ValueError(f"{m} mask has shape {tuple(mask.shape)}, its embeddings {tuple(x.shape)}")
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"batch sizes differ between modalities: {m} has {x.shape[0]}, others {batch}")
            batch = x.shape[0]
            mask = mask.bool()
            if dtype is not None and x.is_floating_point():
                x = x.to(dtype)
            clean[m] = (x.masked_fill(~mask.unsqueeze(-1), 0.0), mask)
        return self.fuse(clean)


def presence(features: Features) -> dict[str, Tensor]:
    """``{modality: (B,) bool}``: which samples have at least one unmasked token of each modality."""
    return {m: mask.any(dim=1) for m, (_, mask) in features.items()}


def drop_modalities(features: Features, p: float, generator: torch.Generator | None = None) -> dict[str, tuple]:
    """Modality dropout: hides each present modality of each sample with probability ``p``.

    A sample always keeps at least one of the modalities it has (one chosen at random among them),
    so no sample is left without input. Hidden modalities get an all-``False`` mask row, which every
    adapter treats as absent.

    Examples:
        >>> import torch
        >>> f = {"dna": (torch.ones(4, 2, 3), torch.ones(4, 2, dtype=torch.bool)),
        ...      "rna": (torch.ones(4, 5, 3), torch.ones(4, 5, dtype=torch.bool))}
        >>> kept = drop_modalities(f, p=1.0)
        >>> (kept["dna"][1].any(1).int() + kept["rna"][1].any(1).int()).tolist()  # one modality each
        [1, 1, 1, 1]
    """
    if p <= 0.0 or not features:
        return dict(features)
    names = list(features)
    flags = presence(features)
    present = torch.stack([flags[m] for m in names], dim=1)  # (B, M)
    drop = (_uniform(present, generator) < p) & present
    emptied = ~(present & ~drop).any(dim=1) & present.any(dim=1)
    # keep one randomly chosen present modality of each sample that would lose them all (done for every
    # batch: branching on `emptied.any()` would make the host wait for the device at each step)
    scores = _uniform(present, generator).masked_fill(~present, -1.0)
    keep = torch.nn.functional.one_hot(scores.argmax(dim=1), len(names)).bool()
    drop &= ~(keep & emptied.unsqueeze(1))
    return {m: (features[m][0], features[m][1] & ~drop[:, i].unsqueeze(1)) for i, m in enumerate(names)}


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform noise shaped and placed like ``like``; drawn on the device itself unless ``generator``
    lives elsewhere (then drawn there and copied)."""
    device = generator.device if generator is not None else like.device
    return torch.rand(like.shape, generator=generator, device=device).to(like.device)

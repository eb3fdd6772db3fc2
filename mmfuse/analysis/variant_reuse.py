"""One backbone pass per input a variant changes: reference predictions and unchanged inputs reused.

A transcript's reference inputs (its DNA window centred on the TSS, its RNA, its protein) are the same for every
variant near it, and a variant leaves most of its modalities as they are (the protein of a synonymous or intronic
variant, the RNA and protein of an upstream one). :class:`VariantCollate` gives each batch the distinct sequences
of every modality, tokenized once; :class:`Reuse` keeps, per process, each encoded sequence's backbone output
(``(L, D)`` embeddings and mask, within a memory budget, least recently used first out) and each transcript's
reference prediction, so a batch runs each backbone only on the sequences no earlier batch encoded, and the head
on the reference of a transcript once. Adapters ignore masked tokens, so a record's features taken from another
batch give its prediction to float rounding (the model's contract; tested against a whole batch run by hand).

Inputs a backbone's tokenizer refuses (a protein longer than ESM2 reads, with no ``lengths.max`` to crop it) are
found in the collate, before any pass of the batch: the pair is skipped, counted and named in the summary, and the
run goes on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmfuse.data.collate import sequence_key
from mmfuse.tokenizers import InvalidSequenceError

__all__ = ["Reuse", "VariantCollate"]


def _select(inputs: Any, rows: Sequence[int]) -> Any:
    """Rows of a tokenizer's output: tensors by their first dimension, lists by position."""
    if isinstance(inputs, Tensor):
        return inputs[torch.as_tensor(list(rows), dtype=torch.long, device=inputs.device)]
    if isinstance(inputs, Mapping):
        return {k: _select(v, rows) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return [inputs[i] for i in rows]
    return inputs


class VariantCollate:
    """A batch of variant-transcript pairs: per modality the distinct sequences of their reference and alternate
    inputs, tokenized once, and where each record's sequence is among them (``-1``: the record lacks it).

    Batch layout::

        {"rows": [output fields] * N, "positions": [int] * N (in the items given),
         "skipped": [{"variant", "transcript_id", "modality", "reason"}],
         "ref_keys": [str] * N,                      # the reference inputs' key (one per transcript)
         "modalities": {modality: {"keys": [str] * S, "inputs": tokenizer output of the S sequences,
                                   "ref": [int] * N, "alt": [int] * N}}}
    """

    def __init__(self, tokenizers: Mapping[str, Any]) -> None:
        self.tokenizers = dict(tokenizers)
        self._checked: dict[tuple[str, str], str | None] = {}

    def _problem(self, modality: str, sequence: str | None) -> str | None:
        if sequence is None:
            return None
        key = (modality, sequence_key(sequence))
        if key not in self._checked:
            try:
                self.tokenizers[modality].validate(sequence)
                self._checked[key] = None
            except InvalidSequenceError as exc:
                self._checked[key] = exc.reason
            if len(self._checked) > 100_000:  # a worker's memory stays bounded on a whole genome
                self._checked.clear()
        return self._checked.get(key)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        kept, skipped, positions = [], [], []
        for position, item in enumerate(items):
            problem = next(((m, p) for side in ("ref", "alt") for m, s in item[side]["sequences"].items()
                            if m in self.tokenizers and (p := self._problem(m, s))), None)  # fmt: skip
            if problem is None:
                kept.append(item)
                positions.append(position)
                continue
            row = item["row"]
            skipped.append({"variant": row["variant"], "transcript_id": row["transcript_id"], "modality": problem[0],
                            "reason": problem[1], "ordinal": row.get("__pair")})  # fmt: skip
        modalities = {}
        for modality, tokenizer in self.tokenizers.items():
            distinct: dict[str, int] = {}
            sequences: list[str] = []
            where: dict[str, list[int]] = {"ref": [], "alt": []}
            for item in kept:
                for side in ("ref", "alt"):
                    sequence = item[side]["sequences"].get(modality)
                    if sequence is None:
                        where[side].append(-1)
                        continue
                    key = sequence_key(sequence)
                    if key not in distinct:
                        distinct[key] = len(sequences)
                        sequences.append(sequence)
                    where[side].append(distinct[key])
            modalities[modality] = {"keys": list(distinct), "inputs": tokenizer(sequences) if sequences else None,
                                    **where}  # fmt: skip
        ref_keys = ["|".join([item["row"]["transcript_id"], *(
            modalities[m]["keys"][modalities[m]["ref"][i]] if modalities[m]["ref"][i] >= 0 else "-"
            for m in self.tokenizers)]) for i, item in enumerate(kept)]  # fmt: skip
        return {"rows": [i["row"] for i in kept], "positions": positions, "skipped": skipped, "ref_keys": ref_keys,
                "modalities": modalities}  # fmt: skip


class Reuse:
    """Per process: backbone outputs of encoded sequences and reference predictions, kept for later batches.

    Args:
        budget_mb: memory the kept backbone outputs may take (least recently used dropped first); reference
            predictions (a row of targets per transcript) are kept apart, up to ``max_references``.
    """

    def __init__(self, budget_mb: float = 1024.0, max_references: int = 1_000_000) -> None:
        self.budget = int(budget_mb * 2**20)
        self.max_references = max_references
        self.features: OrderedDict[tuple[str, str], tuple[Tensor, Tensor]] = OrderedDict()
        self.references: OrderedDict[str, Tensor] = OrderedDict()
        self.bytes = 0
        #: sequences each backbone encoded, and the pairs scored (the passes per pair are their ratio)
        self.passes: dict[str, int] = {}
        self.pairs = 0

    def reset(self) -> None:
        """Forgets what was kept: a chunk of batches starts afresh, so that its predictions do not depend on what
        came before it (a resumed run computes a chunk exactly as an uninterrupted one)."""
        self.features.clear()
        self.references.clear()
        self.bytes = 0

    def _keep(self, key: tuple[str, str], value: tuple[Tensor, Tensor]) -> None:
        size = value[0].numel() * value[0].element_size() + value[1].numel()
        if size > self.budget:
            return
        self.features[key] = value
        self.bytes += size
        while self.bytes > self.budget:
            _, (emb, mask) = self.features.popitem(last=False)
            self.bytes -= emb.numel() * emb.element_size() + mask.numel()

    def _encode(self, model: Any, modality: str, entry: Mapping[str, Any], needed: set[int]) -> None:
        """Encodes the batch's sequences of ``modality`` at ``needed`` that are not kept yet."""
        keys = entry["keys"]
        missing = sorted(i for i in needed if (modality, keys[i]) not in self.features)
        for i in needed:
            if i not in missing:
                self.features.move_to_end((modality, keys[i]))
        self.passes[modality] = self.passes.get(modality, 0) + len(missing)
        if not missing:
            return
        out = model.backbones[modality](_select(entry["inputs"], missing))
        for j, i in enumerate(missing):
            mask = out.mask[j]
            valid = torch.nonzero(mask)
            length = int(valid[-1]) + 1 if len(valid) else 1
            self._keep((modality, keys[i]), (out.embeddings[j, :length], mask[:length]))
            self.features.move_to_end((modality, keys[i]))

    def _features(self, model: Any, entries: Mapping[str, Any], records: list[tuple[str, int]],
                  like: Tensor) -> dict[str, tuple[Tensor, Tensor]]:  # fmt: skip
        features = {}
        for modality, backbone in model.backbones.items():
            entry = entries[modality]
            rows = [entry[side][i] for side, i in records]
            got = [self.features[(modality, entry["keys"][r])] if r >= 0 else None for r in rows]
            length = max([len(g[1]) for g in got if g is not None] + [1])
            dtype = next((g[0].dtype for g in got if g is not None), like.dtype)
            emb = torch.zeros(len(rows), length, backbone.embed_dim, dtype=dtype, device=like.device)
            mask = torch.zeros(len(rows), length, dtype=torch.bool, device=like.device)
            for k, g in enumerate(got):
                if g is not None:
                    emb[k, : len(g[1])], mask[k, : len(g[1])] = g
            features[modality] = (emb, mask)
        return features

    def predict(self, model: Any, objective: Any, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """``(ref, alt)`` predictions ``(N, targets)`` of a :class:`VariantCollate` batch."""
        n, entries = len(batch["rows"]), batch["modalities"]
        like = next(model.parameters())
        refs = [i for i, key in enumerate(batch["ref_keys"]) if key not in self.references]
        refs = list({batch["ref_keys"][i]: i for i in reversed(refs)}.values())[::-1]  # one per transcript
        records = [("ref", i) for i in refs] + [("alt", i) for i in range(n)]
        for modality in model.backbones:
            entry = entries[modality]
            needed = {entry[side][i] for side, i in records} - {-1}
            # every needed output is kept before any is read: a budget too small for one batch keeps them anyway
            saved, self.budget = self.budget, max(self.budget, 1 << 62)
            try:
                self._encode(model, modality, entry, needed)
            finally:
                self.budget = saved
        outputs = model.outputs(self._features(model, entries, records, like)).float()
        preds = objective.prediction(outputs, [str(i) for i in range(len(records))])["preds"]
        self._trim()
        for k, i in enumerate(refs):
            self.references[batch["ref_keys"][i]] = preds[k]
            if len(self.references) > self.max_references:
                self.references.popitem(last=False)
        self.pairs += n
        ref = torch.stack([self.references[key] for key in batch["ref_keys"]]) if n else preds[:0]
        return ref, preds[len(refs) :]

    def _trim(self) -> None:
        while self.bytes > self.budget and self.features:
            _, (emb, mask) = self.features.popitem(last=False)
            self.bytes -= emb.numel() * emb.element_size() + mask.numel()

    def per_pair(self) -> dict[str, float]:
        """Backbone passes per variant-transcript pair, by modality."""
        return {m: n / max(self.pairs, 1) for m, n in self.passes.items()}

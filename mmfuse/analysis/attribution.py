"""The computations of ``mmfuse explain`` (:mod:`mmfuse.analysis.explain`): a record's model run from tokens,
integrated gradients through Captum, in-silico mutagenesis, letters from tokens, and the record's plot."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmfuse.io import atomic_path

__all__ = [
    "ALPHABETS",
    "encode_all",
    "find_cds",
    "integrated_gradients",
    "letter_scores",
    "mutagenesis",
    "plot_record",
    "predict_units",
    "select",
    "unwrap",
]

#: the letters each position is mutated to by in-silico mutagenesis
ALPHABETS = {"dna": "ACGT", "rna": "ACGT", "protein": "ACDEFGHIKLMNPQRSTVWY"}


def letter_scores(token_scores: np.ndarray, spans: Sequence[tuple[int, int] | None], length: int) -> np.ndarray:
    """Per-letter scores ``(length,)`` from per-token ones: each token's score shared equally by its letters.

    Examples:
        >>> letter_scores(np.array([9.0, 6.0, 1.0]), [None, (0, 3), (3, 4)], 4).tolist()
        [2.0, 2.0, 2.0, 1.0]
    """
    out = np.zeros(length, dtype=np.float64)
    for score, span in zip(token_scores, spans, strict=False):
        if span is not None:
            start, end = span
            out[start:end] += score / (end - start)
    return out


def find_cds(rna: str, protein: str) -> tuple[int, int] | None:
    """Where ``protein`` is coded in ``rna``: ``(start, end)`` of its codons (stop codon included when there is
    one), found by translating the three frames (Biopython); ``None`` if no frame codes it.

    Examples:
        >>> find_cds("GGATGAAATAGCC", "MK")
        (2, 11)
    """
    from Bio.Seq import Seq

    if not protein:
        return None
    dna = rna.upper().replace("U", "T")
    protein = protein.rstrip("*")
    for frame in range(3):
        usable = (len(dna) - frame) // 3 * 3
        translated = str(Seq(dna[frame : frame + usable]).translate())
        at = translated.find(protein)
        if at >= 0:
            start = frame + 3 * at
            end = start + 3 * len(protein)
            if translated[at + len(protein) : at + len(protein) + 1] == "*":
                end += 3
            return start, end
    return None


def unwrap(backbone: Any) -> Any:
    """A cached backbone's own backbone (explain runs it: attributions need its input layer)."""
    return backbone.unwrapped()


def encode_all(model: Any, tokens: Mapping[str, Mapping[str, Tensor]], batch: int) -> dict[str, tuple[Tensor, Tensor]]:
    """``{modality: (embeddings, mask)}`` of every backbone, running each one's own ``encode`` (also when its
    weights are fixed or it is cached: attributions need its graph); absent modalities fully masked."""
    reference = next(model.parameters())
    features = {}
    for m, backbone in model.backbones.items():
        inner = unwrap(backbone)
        if m in tokens:
            out = inner.encode(tokens[m])
            features[m] = (out.embeddings, out.mask)
        else:
            features[m] = (torch.zeros(batch, 1, inner.embed_dim, device=reference.device, dtype=reference.dtype),
                           torch.zeros(batch, 1, dtype=torch.bool, device=reference.device))  # fmt: skip
    return features


def predict_units(task: Any, features: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Predictions ``(B, targets)`` in the data's units (class probabilities for a classifier)."""
    model = task.model
    return task.objective.predict(model.head(model.adapter(dict(features))).float())


def select(predictions: Tensor, column: int | None) -> Tensor:
    return predictions.mean(1) if column is None else predictions[:, column]


def integrated_gradients(
    task: Any, tokens: dict[str, dict[str, Tensor]], sequences: dict[str, str], chosen: list[str],
    column: int | None, steps: int, batch_size: int,
) -> tuple[dict[str, np.ndarray], float]:  # fmt: skip
    """Each letter's integrated-gradients score in ``chosen`` modalities of one record (see the module
    docstring), and Captum's convergence delta."""
    from captum.attr import LayerIntegratedGradients

    model = task.model
    inner = {m: unwrap(model.backbones[m]) for m in chosen}
    ids = tuple(tokens[m]["input_ids"] for m in chosen)
    masks = tuple(tokens[m]["attention_mask"] for m in chosen)
    spans = {m: inner[m].tokenizer.spans(sequences[m]) for m in chosen}
    baselines = []
    for m, token_ids in zip(chosen, ids, strict=True):
        letters = torch.tensor([s is not None for s in spans[m]], device=token_ids.device)
        base, n = token_ids.clone(), len(letters)
        base[0, :n] = torch.where(letters, inner[m].tokenizer.reference_id, token_ids[0, :n])
        baselines.append(base)
    fixed = {m: t for m, t in tokens.items() if m not in chosen}

    def forward(*args: Tensor) -> Tensor:
        n = len(chosen)
        size = args[0].shape[0]
        given = {m: {"input_ids": args[i], "attention_mask": args[n + i]} for i, m in enumerate(chosen)}
        given |= {m: {k: v.expand(size, *v.shape[1:]) for k, v in t.items()} for m, t in fixed.items()}
        return select(predict_units(task, encode_all(model, given, size)), column)

    with warnings.catch_warnings():  # each modality's input layer depends on its own tokens alone
        warnings.filterwarnings("ignore", message="Multiple layers provided")
        explainer = LayerIntegratedGradients(forward, [inner[m].input_layer() for m in chosen])
    with torch.enable_grad():
        attributions, delta = explainer.attribute(
            inputs=ids, baselines=tuple(baselines), additional_forward_args=masks, n_steps=steps,
            internal_batch_size=batch_size, return_convergence_delta=True,
        )  # fmt: skip
    if not isinstance(attributions, list | tuple):
        attributions = [attributions]
    out = {}
    for m, attribution in zip(chosen, attributions, strict=True):
        per_token = attribution[0].detach().float().sum(-1).cpu().numpy()
        out[m] = letter_scores(per_token, spans[m], len(sequences[m]))
    return out, float(delta.abs().max())


def mutagenesis(
    task: Any, features: dict[str, tuple[Tensor, Tensor]], sequence: str, modality: str, reference: Tensor,
    columns: list[int | None], max_length: int, batch_size: int,
) -> list[np.ndarray] | str:  # fmt: skip
    """Each letter's in-silico mutagenesis score of one record's ``modality``, one array per column (NaN where
    not mutated); a string says why the sequence was not mutated."""
    model = task.model
    inner = unwrap(model.backbones[modality])
    kind = getattr(inner, "modality", modality)
    alphabet = ALPHABETS.get(kind, ALPHABETS.get(modality))
    if alphabet is None:
        return f"{modality}: no mutagenesis alphabet for modality {kind!r}"
    if kind == "rna" and "U" in sequence.upper():
        alphabet = "ACGU"
    length = len(sequence)
    if length > max_length and kind != "dna":
        return f"{modality} longer than attributions.ism_max_length ({max_length}): integrated gradients only"
    start = max(0, (length - max_length) // 2)
    positions = range(start, min(length, start + max_length))
    upper = sequence.upper()
    mutants = [(p, a) for p in positions if upper[p] in alphabet for a in alphabet if a != upper[p]]
    device = reference.device
    effects = torch.zeros(len(mutants), reference.shape[0], device=device)
    with torch.no_grad():
        for lo in range(0, len(mutants), batch_size):
            chunk = mutants[lo : lo + batch_size]
            batch = inner.tokenizer([sequence[:p] + a + sequence[p + 1 :] for p, a in chunk])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = inner.encode(batch)
            size = len(chunk)
            mixed = {m: (e.expand(size, *e.shape[1:]), k.expand(size, *k.shape[1:]))
                     for m, (e, k) in features.items() if m != modality}  # fmt: skip
            mixed[modality] = (out.embeddings, out.mask)
            effects[lo : lo + size] = predict_units(task, mixed)
    results = []
    for column in columns:
        ref = float(select(reference[None], column)[0])
        mutant = select(effects, column).cpu().numpy()
        score = np.full(length, np.nan)
        sums: dict[int, list[float]] = {}
        for (p, _), value in zip(mutants, mutant, strict=True):
            sums.setdefault(p, []).append(float(value))
        for p, values in sums.items():
            score[p] = ref - float(np.mean(values))
        results.append(score)
    return results


def plot_record(
    path: Path, record: str, sequences: dict[str, str], frame: pd.DataFrame, target: str, kinds: dict[str, str],
    dna_flank: int | None,
) -> None:  # fmt: skip
    """One PNG of ``record``'s attributions to ``target``: a track per modality (in ``kinds``' order, each
    modality's kind: dna, rna, protein…) and method, written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = frame[frame["target"] == target]
    tracks = [(m, method) for m in kinds for method in ("ig", "ism")
              if len(shown[(shown["modality"] == m) & (shown["method"] == method)])]  # fmt: skip
    if not tracks:
        return
    fig, axes = plt.subplots(len(tracks), 1, figsize=(11, 1.9 * len(tracks) + 0.6), squeeze=False)
    of_kind = {kind: m for m, kind in reversed(kinds.items()) if m in sequences}
    rna, protein = of_kind.get("rna"), of_kind.get("protein")
    cds = find_cds(sequences[rna], sequences[protein] if protein else "") if rna else None
    for ax, (m, method) in zip(axes[:, 0], tracks, strict=True):
        part = shown[(shown["modality"] == m) & (shown["method"] == method)]
        x, y = part["position"].to_numpy(), part["score"].to_numpy()
        kind = kinds[m]
        label = f"{m} position"
        if kind == "dna":
            centre = len(sequences[m]) // 2
            x = x - centre
            label = f"{m}: bp from the window's centre (TSS)"
            if dna_flank is not None:
                keep = np.abs(x) <= dna_flank
                x, y = x[keep], y[keep]
        if kind == "rna" and cds is not None:
            ax.axvspan(cds[0], cds[1], color="0.9", zorder=0, label="CDS")
            label = f"{m}: transcript position (CDS shaded)"
        if kind == "protein":
            label = f"{m}: residue"
        ax.bar(x, y, width=1.0, color=np.where(y >= 0, "#c0392b", "#2c7fb8"), linewidth=0)
        ax.axhline(0, color="0.4", linewidth=0.5)
        ax.set_ylabel("IG" if method == "ig" else "ISM")
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{record}: attributions to {target}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

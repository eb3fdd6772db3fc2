"""Predictions of an exported model from raw sequences: checked, cropped and tokenized as its data module did.

Records are ``{modality: sequence}`` mappings (a modality may be missing or ``None``, as in training with
``missing_modalities: mask``; an ``id`` key names the record), or one mapping of columns ``{modality: [...]}``.
Every record is checked before the first forward pass, so a bad one fails the call with one line naming it and
nothing is computed; the rows are what ``mmfuse predict`` writes for the same records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.datasets.checks import crop_hint
from mmfuse.data.store.rows import crop_sequence
from mmfuse.errors import InputError, MmfuseError
from mmfuse.tokenizers import InvalidSequenceError

__all__ = ["InputError", "check_records", "predict_frame", "predict_rows"]

#: the key of a record's id
ID = "id"


def _as_records(records: Any, modalities: Sequence[str]) -> list[Mapping[str, Any]]:
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("list")
    if isinstance(records, Mapping):  # columns: {modality: [sequences]}
        columns = {k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in records.items()}
        bad = [k for k, v in columns.items() if not isinstance(v, list)]
        if bad:
            raise InputError(f"column {bad[0]!r} must be a list of sequences (one per record), not "
                             f"{type(columns[bad[0]]).__name__}")  # fmt: skip
        sizes = {k: len(v) for k, v in columns.items()}
        if len(set(sizes.values())) > 1:
            raise InputError(f"the columns hold different numbers of records: {sizes}")
        n = next(iter(sizes.values()), 0)
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(records, str) or not isinstance(records, Sequence):
        raise InputError(f"records must be a list of {{modality: sequence}} mappings or a mapping of columns "
                         f"{{modality: [sequences]}}, not {type(records).__name__} (it reads "
                         f"{', '.join(modalities)})")  # fmt: skip
    return list(records)


def check_records(model: Any, records: Any) -> list[dict[str, Any]]:
    """``records`` as the model reads them: ``{"id": str, "sequences": {modality: str | None}}`` each, cropped
    as the data module cropped (``lengths.max``/``crop``), every sequence checked by its backbone's tokenizer.

    Raises:
        InputError: an unknown key, a sequence that is not text, a record without any modality, a letter the
            tokenizer does not read, a sequence longer than the model accepts (one line naming the record).
    """
    config = model.pretrained
    modalities = list(config.modalities)
    tokenizers = model.tokenizers()
    out = []
    for i, record in enumerate(_as_records(records, modalities)):
        if not isinstance(record, Mapping):
            raise InputError(f"record {i} is {type(record).__name__}, not a mapping {{modality: sequence}} (the model "
                             f"reads {', '.join(modalities)})")  # fmt: skip
        rid = record.get(ID, str(i))
        name = f"record {i}" + (f" ({rid!r})" if ID in record else "")
        unknown = sorted(str(k) for k in record if k not in modalities and k != ID)
        if unknown:
            raise InputError(f"{name}: {unknown[0]!r} is no modality of this model (it reads {', '.join(modalities)})")
        if not isinstance(rid, str | int):
            raise InputError(f"{name}: its id must be text, not {type(rid).__name__}")
        sequences: dict[str, str | None] = {}
        for modality in modalities:
            sequence = record.get(modality)
            if sequence is not None and not isinstance(sequence, str):
                raise InputError(f"{name}, {modality} sequence: expected text, not {type(sequence).__name__}")
            sequences[modality] = _checked(sequence, modality, config, tokenizers[modality], name)
        if all(s is None for s in sequences.values()):
            raise InputError(f"{name} has none of the modalities {', '.join(modalities)}; give at least one")
        out.append({"id": str(rid), "sequences": sequences})
    if not out:
        raise InputError("no records to predict")
    return out


def _checked(sequence: str | None, modality: str, config: Any, tokenizer: Any, name: str) -> str | None:
    if sequence is None or not sequence.strip():
        return None  # absent, as an empty cell of a table
    limit = config.max_lengths.get(modality)
    policy = config.crop.get(modality, "error")
    if limit is not None and len(sequence) > limit:
        if policy == "error":
            raise InputError(f"{name}, {modality} sequence: {len(sequence):,} letters, over the {limit:,} the model "
                             f"was trained with (lengths.max; crop: error); shorten it")  # fmt: skip
        sequence = crop_sequence(sequence, limit, policy)
    try:
        tokenizer.validate(sequence)
    except InvalidSequenceError as exc:
        hint = crop_hint(modality, exc.limit, policy).replace("\n", " ") if exc.limit else ""
        raise InputError(f"{name}, {modality} sequence: {exc.reason}{hint}") from None
    return sequence


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _gene_tokens(model: Any, batch: dict[str, Any]) -> None:
    """Names every gene token of the token modality (``batch["tokens"]``, as gene classification's predict)."""
    modality = model.token_modality
    tokens = batch["inputs"].get(modality)
    genes = getattr(model.tokenizers()[modality], "genes", None)
    if tokens is None or not isinstance(genes, Mapping):
        raise InputError(f"the {modality} tokenizer lists no genes to name the predicted tokens by")
    names = {int(entry[0]): str(gene) for gene, entry in genes.items()}
    ids = tokens["input_ids"].numpy()
    gene = np.vectorize(lambda t: t in names, otypes=[bool])(ids) & batch["present"][modality].numpy()[:, None]
    batch["tokens"] = {"name": "gene", "position": torch.from_numpy(np.argwhere(gene)),
                       "values": [names[int(t)] for t in ids[gene]]}  # fmt: skip


def _frame(model: Any, prediction: Mapping[str, Any]) -> pd.DataFrame:
    """One batch's rows, as :class:`~mmfuse.training.writer.PredictionWriter` writes them."""
    names = list(model.objective.target_names)
    preds = prediction["preds"].numpy()
    if not np.isfinite(preds).all():
        raise MmfuseError("the model's predictions are NaN or infinite for these records")
    frame = pd.DataFrame(preds, columns=names if len(names) == preds.shape[1] else None)
    frame.insert(0, ID, list(prediction["ids"]), allow_duplicates=True)
    if "tokens" in prediction:
        frame.insert(1, str(prediction["token_column"]), list(prediction["tokens"]), allow_duplicates=True)
    if "labels" in prediction:
        frame.insert(frame.shape[1], "predicted", list(prediction["labels"]), allow_duplicates=True)
    return frame


@torch.inference_mode()
def predict_frame(model: Any, records: Any, batch_size: int = 32) -> pd.DataFrame:
    """One row per record (per gene token, for a token classifier): ``id``, one column per output (class
    probabilities and ``predicted`` for a classifier), in the data's units."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, not {batch_size}")
    checked = check_records(model, records)
    collate = MultiModalCollate(model.tokenizers())
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    frames = []
    try:
        for start in range(0, len(checked), batch_size):
            batch = collate(checked[start : start + batch_size])
            if model.token_modality is not None:
                _gene_tokens(model, batch)
            batch = _move(batch, device)
            outputs = model(batch["inputs"], batch["present"]).float()
            frames.append(_frame(model, model.objective.batch_prediction(outputs, batch)))
    finally:
        model.train(was_training)
    return pd.concat(frames, ignore_index=True)


def predict_rows(model: Any, records: Any, batch_size: int = 32) -> list[dict[str, Any]]:
    """:func:`predict_frame` as JSON-ready rows (``{"id": …, <output>: float, …}``)."""
    frame = predict_frame(model, records, batch_size)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]  # fmt: skip

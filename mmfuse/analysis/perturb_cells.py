"""The computation of ``mmfuse perturb`` for one cell: its perturbed copies embedded in batches, their measures
against the unperturbed cell and the states, and the first pass's state embeddings (:mod:`mmfuse.analysis.perturb`)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch import Tensor

from mmfuse.analysis.attribution import unwrap
from mmfuse.analysis.perturb_options import (
    CELL_COLUMNS,
    Unit,
    other_features,
    perturb_ranked,
)  # fmt: skip
from mmfuse.errors import ConfigError, NonFiniteError

__all__ = ["CellPerturbation", "StateEmbeddings"]


class CellPerturbation:
    """What :class:`~mmfuse.analysis.perturb.PerturbationWriter` computes per cell (its options set by the writer)."""

    def _token(self, gene: str, option: str, data_genes: Sequence[str]) -> int:
        token = self._token_of.get(gene)
        if token is not None:
            return token
        vocabulary = f"the {self.chosen} backbone's vocabulary ({len(self._token_of)} genes)"
        if gene in set(data_genes):
            raise ConfigError(f"perturbation.{option}: {gene!r} is a gene of the data but not of {vocabulary}: the "
                              f"model never reads it, so perturbing it changes nothing; choose another gene")
        import difflib

        close = difflib.get_close_matches(gene, list(dict.fromkeys([*self._token_of, *data_genes])), n=3)
        hint = f"; the closest known ids: {', '.join(close)}" if close else ""
        raise ConfigError(f"perturbation.{option}: unknown gene {gene!r}, neither in the data nor in "
                          f"{vocabulary}{hint}")  # fmt: skip

    @property
    def measures(self) -> list[str]:
        """The per-cell measures, in their columns' order."""
        out = ["shift"]
        if self.cell_states is not None:
            out += ["to_goal"] if self.cell_states.goal is not None else []
            out += ["from_start"] if self.cell_states.start is not None else []
            out += [f"to_{a}" for a in self.cell_states.alternatives]
        return out + [f"d_{name}" for name in self.outputs]

    @property
    def ranked_by(self) -> str:
        if self.rank_by is not None:
            if self.rank_by not in self.measures:
                raise ConfigError(f"perturbation.rank_by is one of {', '.join(self.measures)}, not {self.rank_by!r}")
            return self.rank_by
        states = self.cell_states
        if states is not None and states.goal is not None:
            return "to_goal"
        return "from_start" if states is not None and states.start is not None else "shift"

    # embeddings -------------------------------------------------------------------------------------
    def embed(self, module: Any, framed: Sequence[np.ndarray], others: Mapping[str, tuple[Tensor, Tensor]]
              ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:  # fmt: skip
        """``(cell embeddings (N, D), head outputs in the data's units (N, T) or None, gene embeddings
        (N, L, d), token ids (N, L))`` of framed inputs of one cell; ``others``: the cell's other modalities'
        features (one row each), repeated for every copy."""
        model = module.model
        device = next(model.parameters()).device
        tokens = {k: v.to(device) for k, v in self.tokenizer.pad(framed).items()}
        out = unwrap(model.backbones[self.chosen]).encode(tokens)
        genes, mask = out.embeddings, out.mask
        ids = tokens["input_ids"]
        predictions = None
        if self.mode in ("mean", "cls"):
            if self.mode == "cls":
                cell = genes[:, 0]
            else:
                keep = mask.clone()
                if self.tokenizer.special_tokens:  # <cls> and <eos> are not genes
                    keep[:, 0] = False
                    keep &= ids != int(self.tokenizer.suffix[0])
                weights = keep.unsqueeze(-1).to(genes.dtype)
                cell = (genes * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.mode == "fused" or self.outputs:
            n = len(framed)
            features = {m: (e.expand(n, *e.shape[1:]), k.expand(n, *k.shape[1:])) for m, (e, k) in others.items()}
            features[self.chosen] = (genes, mask)
            fused = model.adapter(features)
            if self.mode == "fused":
                cell = fused
            if self.outputs:
                predictions = module.objective.predict(model.head(fused).float())
        return cell.float(), predictions, genes.float(), ids

    # the step -----------------------------------------------------------------------------------------
    def step(self, module: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``predict_step``'s output: ``{"ids", "frames": [rows of each cell]}``."""
        features = other_features(module.model, batch, self.chosen)
        frames = []
        for b, cell in enumerate(batch["ids"]):
            others = {m: (e[b : b + 1], k[b : b + 1]) for m, (e, k) in features.items() if m != self.chosen}
            sequence = batch["sequences"][self.chosen][b]
            frames.append(self._cell(module, str(cell), sequence, others))
        return {"ids": list(batch["ids"]), "frames": frames}

    def _units(self, ranked: np.ndarray, framed_genes: int) -> list[Unit]:
        """The perturbations of one cell (listed ones a cell lacks have status ``not_expressed``)."""
        read = {int(t): i for i, t in enumerate(ranked[:framed_genes])}
        adds = self.type == "overexpress"

        def unit(tokens: Sequence[int], label: str) -> Unit:
            missing = [t for t in tokens if t not in read]
            rank = float(read[tokens[-1]]) if tokens[-1] in read else math.nan
            if missing and not adds:
                return Unit(label, tuple(tokens), "not_expressed", rank)
            return Unit(label, tuple(tokens), "added" if missing else "perturbed", rank)

        anchor = [self._anchor_token] if self._anchor_token is not None else []
        if self.genes == "all":
            singles = [int(t) for t in ranked[:framed_genes] if int(t) not in anchor]
        else:
            singles = [t for t in self._listed if t not in anchor]
        if self.together:
            present = [t for t in self._listed if t in read] if not adds else list(self._listed)
            label = "+".join(self._gene_of[t] for t in self._listed)
            return [unit(present, label) if present else Unit(label, tuple(self._listed), "not_expressed", math.nan)]
        units = [unit(anchor, self._gene_of[anchor[0]])] if anchor else []
        for t in singles:
            units.append(unit([*anchor, t], "+".join(self._gene_of[g] for g in (*anchor, t))))
        return units

    def _partner(self, unit: Unit, ranked: np.ndarray, framed_genes: int) -> tuple[int, ...] | None:
        """The null of a perturbation: its last gene replaced by a random gene of the cell within
        ``null_window`` ranks (for a gene added by ``overexpress``: a random gene the cell's encoding lacks)."""
        anchor = {self._anchor_token} if self._anchor_token is not None else set()
        exclude = set(unit.tokens) | set(self._listed) | anchor
        head = list(unit.tokens[:-1])
        if math.isnan(unit.rank):
            framed = {int(t) for t in ranked[:framed_genes]}
            pool = [t for t in self._gene_of if t not in framed and t not in exclude]
        else:
            r = int(unit.rank)
            lo, hi = max(0, r - self.null_window), min(framed_genes, r + self.null_window + 1)
            pool = [int(t) for t in ranked[lo:hi] if int(t) not in exclude]
        if not pool:
            return None
        return (*head, int(pool[int(self._rng.integers(len(pool)))]))

    def _cell(self, module: Any, cell: str, sequence: Any, others: Mapping[str, tuple[Tensor, Tensor]]) -> pd.DataFrame:
        ranked = self.tokenizer.ranked(sequence)
        framed_genes = min(len(ranked), self.tokenizer.max_genes)
        # the null's genes: a function of the seed and the cell alone, so DDP's shares pick those of one process
        self._rng = np.random.default_rng([self.cells.seed, zlib.crc32(cell.encode())])
        units = self._units(ranked, framed_genes)
        run = [u for u in units if u.status != "not_expressed"]
        partners = {u.label: self._partner(u, ranked, framed_genes) for u in run} if self.null else {}
        inputs: dict[tuple[int, ...], int] = {(): 0}  # perturbed tokens -> row of the copies; (): the cell itself
        for tokens in [*(u.tokens for u in run), *(p for p in partners.values() if p is not None)]:
            inputs.setdefault(tokens, len(inputs))
        framed = [self.tokenizer.frame(perturb_ranked(ranked, t, self.type, framed_genes, self.rank_shift) if t
                                       else ranked) for t in inputs]  # fmt: skip
        cells, predictions, shifts = [], [], []
        original_genes = original_ids = None
        for start in range(0, len(framed), self.batch_size):
            emb, pred, genes, ids = self.embed(module, framed[start : start + self.batch_size], others)
            cells.append(emb)
            predictions.append(pred)
            if self.gene_shifts:
                if original_genes is None:
                    original_genes, original_ids = genes[0], ids[0]
                shifts += [(start + j, v) for j, v in self._gene_shift_rows(original_genes, original_ids, genes, ids)]
        embeddings = torch.cat(cells)
        if not torch.isfinite(embeddings).all():
            raise NonFiniteError(f"the embeddings of cell {cell!r} are NaN or infinite: check the checkpoint's weights")
        measures = self._measures(cell, embeddings, torch.cat(predictions) if self.outputs else None)
        if self.gene_shifts:
            labels = {v: k for k, v in inputs.items()}
            by_tokens = {u.tokens: u.label for u in run}
            for row, (token, value) in shifts:
                label = by_tokens.get(labels[row])
                if label is not None and token in self._gene_of and token not in labels[row]:
                    entry = self._gene_sums.setdefault((label, token), [0.0, 0])
                    entry[0] += value
                    entry[1] += 1
        rows = []
        for u in units:
            row: dict[str, Any] = {"cell": cell, "perturbation": u.label, "status": u.status, "rank": u.rank}
            if u.status != "not_expressed":
                row.update({k: float(v) for k, v in measures[inputs[u.tokens]].items()})
                partner = partners.get(u.label)
                if self.null and partner is not None:
                    row["null_perturbation"] = "+".join(self._gene_of[t] for t in partner)
                    null = measures[inputs[partner]]
                    row["null_shift"] = float(null["shift"])
                    if self.ranked_by != "shift":
                        row[f"null_{self.ranked_by}"] = float(null[self.ranked_by])
            rows.append(row)
        columns = [*CELL_COLUMNS, *self.measures[1:]]
        if self.null:
            columns += ["null_perturbation", "null_shift"] + ([f"null_{self.ranked_by}"] if self.ranked_by != "shift"
                                                               else [])  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def _measures(self, cell: str, embeddings: Tensor, predictions: Tensor | None) -> list[dict[str, float]]:
        """Each copy's measures against the unperturbed cell (row 0)."""
        original = embeddings[:1]
        values: dict[str, Tensor] = {"shift": 1 - F.cosine_similarity(embeddings, original, dim=1)}
        states = self.cell_states
        if states is not None:
            for name, state, sign in (("to_goal", states.goal, 1), ("from_start", states.start, -1),
                                      *((f"to_{a}", a, 1) for a in states.alternatives)):  # fmt: skip
                if state is None:
                    continue
                mean = self.state_means[state].to(embeddings).unsqueeze(0)
                values[name] = sign * (F.cosine_similarity(embeddings, mean, dim=1)
                                       - F.cosine_similarity(original, mean, dim=1))  # fmt: skip
        if predictions is not None:
            for j, name in enumerate(self.outputs):
                values[f"d_{name}"] = predictions[:, j] - predictions[0, j]
        table = {k: v.detach().cpu().numpy() for k, v in values.items()}
        return [{k: table[k][i] for k in table} for i in range(len(embeddings))]

    @staticmethod
    def _gene_shift_rows(original: Tensor, original_ids: Tensor, genes: Tensor, ids: Tensor
                         ) -> list[tuple[int, tuple[int, float]]]:  # fmt: skip
        """``(copy, (gene token, 1 - cos))`` of every gene both the cell and its copy read."""
        base = {int(t): i for i, t in enumerate(original_ids.tolist())}
        rows = []
        for j in range(len(ids)):
            here = [(p, base[int(t)], int(t)) for p, t in enumerate(ids[j].tolist()) if int(t) in base]
            if not here:
                continue
            p, q, tokens = zip(*here, strict=True)
            cos = F.cosine_similarity(genes[j, list(p)], original[list(q)], dim=1).cpu().numpy()
            rows += [(j, (t, float(1 - c))) for t, c in zip(tokens, cos, strict=True)]
        return rows



class StateEmbeddings:
    """The analysis of the first pass: the sum and count of the unperturbed embeddings of each state's cells."""

    def __init__(self, writer: Any) -> None:  # a PerturbationWriter
        self.writer = writer
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def step(self, module: Any, batch: Mapping[str, Any]) -> None:
        writer = self.writer
        features = other_features(module.model, batch, writer.chosen)
        for b, cell in enumerate(batch["ids"]):
            others = {m: (e[b : b + 1], k[b : b + 1]) for m, (e, k) in features.items() if m != writer.chosen}
            ranked = writer.tokenizer.ranked(batch["sequences"][writer.chosen][b])
            emb = writer.embed(module, [writer.tokenizer.frame(ranked)], others)[0][0].detach().cpu()
            state = writer._state_of[str(cell)]
            self.sums[state] = self.sums.get(state, 0) + emb.double()
            self.counts[state] = self.counts.get(state, 0) + 1

    def means(self, trainer: Trainer, states: Sequence[str], width: int) -> dict[str, Tensor]:
        """Each state's mean embedding, over every process's cells."""
        sums = torch.stack([torch.as_tensor(self.sums.get(s, torch.zeros(width, dtype=torch.float64))) for s in states])
        counts = torch.tensor([float(self.counts.get(s, 0)) for s in states], dtype=torch.float64)
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums.to(trainer.strategy.root_device), reduce_op="sum").cpu()
            counts = trainer.strategy.reduce(counts.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        return {s: (sums[i] / counts[i].clamp(min=1)).float() for i, s in enumerate(states)}



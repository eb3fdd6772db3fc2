"""``--variants.resume``: a killed ``mmfuse score-variants`` run continues from its last complete batch.

With ``resume`` the rows go to a partial file of a fixed name beside the output (``.<name>.resume``, one per DDP
rank), and after each chunk of batches (:data:`~mmfuse.analysis.variants.CHUNK_BATCHES`) a line is appended to
``.<name>.resume.log``: the partial file's size and rows after the chunk, the ordinals (places in the VCF) of the
pairs it held (scored or refused), and how many of them the variant left unchanged; both are flushed to disk. A run
started again with the same command finds them, cuts the partial file back to the size of its last logged chunk
(the rows of a chunk the kill cut short are dropped) and skips the logged pairs. What is kept for reuse is forgotten
at every chunk's start, so the resumed run computes each remaining pair exactly as an uninterrupted run does.
When it finishes, the partial file is renamed to the output and the log removed, as an uninterrupted run leaves
it. CSV and TSV only (a Parquet file cut short has no footer to continue from).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path

__all__ = ["ResumeLog", "summary_lines", "write_summary"]


class ResumeLog:
    """The partial file and log of one process's rows (see the module docstring).

    Args:
        output: the process's output file (the output, or its ``.rank<N>`` part under DDP).
        layout: what the shares depend on (processes, workers): a log of another layout is refused.
    """

    def __init__(self, output: Path, layout: dict[str, Any]) -> None:
        if output.suffix.lower() not in (".csv", ".tsv"):
            raise ConfigError(f"--variants.resume writes CSV or TSV (a Parquet file cut short cannot be continued); "
                              f"give --variants.output a .csv or .tsv name, not {output.name!r}")  # fmt: skip
        self.partial = output.with_name(f".{output.name}.resume")
        self.log = output.with_name(f".{output.name}.resume.log")
        self.layout = layout
        self.rows = self.unchanged = 0
        self.done: list[int] = []

    def recover(self) -> int:
        """Reads what an earlier run left (nothing: a fresh start); returns the rows kept."""
        if not self.partial.is_file() or not self.log.is_file():
            self.partial.unlink(missing_ok=True)
            self.log.unlink(missing_ok=True)
            return 0
        size, done = 0, []
        for number, line in enumerate(self.log.read_text().splitlines()):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # the line being written when the run was killed
            if number == 0:
                if entry != {"layout": self.layout}:
                    raise ConfigError(
                        f"{self.log} was written by a run on {entry.get('layout')}, this one is {self.layout}: resume "
                        f"with the same devices and workers, or delete {self.partial} and {self.log} to start again"
                    )
                continue
            size, self.rows, self.unchanged = entry["bytes"], entry["rows"], entry["unchanged"]
            done += entry["ordinals"]
        with self.partial.open("r+b") as handle:
            handle.truncate(size)
        self.done = done
        return self.rows

    def start(self) -> None:
        """A fresh log, its first line the layout."""
        self._write(self.log, {"layout": self.layout}, mode="w")

    def skip(self, pairs: int) -> np.ndarray:
        """``(pairs,)`` bool: the ordinals already written."""
        mask = np.zeros(pairs, dtype=bool)
        if self.done:
            mask[np.asarray(self.done, dtype=np.int64)] = True
        return mask

    def batch_written(self, rows: int, ordinals: Sequence[int], unchanged: int) -> None:
        """After a batch's rows are appended to :attr:`partial`: its line in the log, both flushed to disk."""
        with self.partial.open("rb") as handle:
            os.fsync(handle.fileno())
        self.rows, self.unchanged = rows, self.unchanged + unchanged
        entry = {"bytes": self.partial.stat().st_size, "rows": rows, "unchanged": self.unchanged,
                 "ordinals": [int(k) for k in ordinals]}  # fmt: skip
        self._write(self.log, entry, mode="a")

    @staticmethod
    def _write(path: Path, entry: dict[str, Any], mode: str) -> None:
        with path.open(mode) as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> None:
        self.log.unlink(missing_ok=True)


def write_summary(writer: Any, path: Path, rows: int, scored: int, joined: bool) -> None:
    """``<output stem>_summary.json`` beside the output: what was scored, skipped and computed, for scripts."""
    counts = {f.name: getattr(writer.counts, f.name) for f in dataclasses.fields(writer.counts)}
    counts = {k: ({str(c): n for c, n in v.items()} if isinstance(v, Mapping) else v) for k, v in counts.items()}
    data = {"output": str(path), "rows": rows, "pairs_scored": scored, "counts": counts,
            "skipped": writer.skipped[:100], "skipped_pairs": len(writer.skipped),
            "backbone_passes_per_pair": writer.reuse.per_pair(), "passes_of": "this process" if joined else "all"}
    with atomic_path(path.with_name(f"{path.stem}_summary.json")) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")

def summary_lines(writer: Any, joined: bool) -> list[str]:
    """The printed summary's lines: the pairs skipped and the backbone passes per pair."""
    lines = []
    if writer.skipped:
        first = writer.skipped[0]
        lines.append(f"pairs skipped, an input the backbone refuses (crop it with the data module's lengths.max): "
                     f"{len(writer.skipped)} (e.g. {first['variant']} in {first['transcript_id']}, "
                     f"{first['modality']}: {first['reason']})")  # fmt: skip
    passes = ", ".join(f"{m} {v:.2f}" for m, v in writer.reuse.per_pair().items())
    lines.append(f"backbone passes per pair{' (this process)' if joined else ''}: {passes} (each "
                 f"transcript's reference once; inputs a variant leaves unchanged reused)")  # fmt: skip
    return lines

"""The bad-input suite: each documented bad input, fed through a public entry point, fails with the exact
error class and a message that names the record (or key, or file) and the fix.

``CASES`` lists them, one ``Case(id, entry_point, error, must_contain)`` per bad input, grouped by kind
(sequences, tables and labels, components and config keys, checkpoints, genome and TF-binding files,
single cells). ``entry_point`` takes the shared :class:`Inputs` and goes through what a user calls:

* the ``mmfuse`` command, run in-process (``main([...])``). A user error prints
  ``mmfuse: error: <message>`` and exits with code 1; the case then checks the error the command
  reported (mmfuse's ``MmfuseError`` or a registry lookup error). A parse error of jsonargparse
  (unknown class, misspelled key) exits with code 2: its class is ``SystemExit``, its message what
  jsonargparse printed;
* a data module's ``setup()``, then ``attach_tokenizers({modality: backbone.tokenizer})``;
* ``Trainer.fit``, registry lookups, backbone constructors and file readers (``open_genome``).

Inputs come from the bundled sample data (12 genes; its first record is ``SYNT00000.1``) written to
CSV files, and from tiny backbones. The checkpoint cases share one real checkpoint, written by a
one-step ``mmfuse fit`` the first time a case needs it.

The policies that accept odd input (lowercase letters, RNA written with T, empty sequences under
``missing_modalities: mask``, ``max_lengths`` cropping, ``missing_contig``/``missing_tf: skip``,
``nan_targets``/``missing_labels: drop``) are tested after the table. Whitespace inside a sequence is
refused, never stripped (see :mod:`mmfuse.tokenizers`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, ContextEmbedding, Enformer, Geneformer, NucleotideTransformer
from mmfuse.cli import main
from mmfuse.data import GTEX_TISSUES, CellClassification, IsoformExpression, SequenceClassification, TFBinding
from mmfuse.data.errors import DataError
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.samples.isoform import make_sample_table
from mmfuse.errors import CheckpointMismatchError, ConfigError, MmfuseError
from mmfuse.registry import ADAPTERS, BACKBONES, PluginLoadError, UnknownComponentError
from mmfuse.training import MLPHead, RegressionTask
from tests.helpers.in_process import bare_argv

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart" / "config.yaml"
FIRST = "SYNT00000.1"  # the first record of the sample table
SECOND = "SYNT00000.2"
LONG_PROTEIN = "MK" * 600  # 1,200 residues; ESM2 reads 1,022
LONG_RNA = "ACGU" * 3200  # 12,800 nt; Nucleotide Transformer reads 2,047 6-mers (12,282 nt)
#: what the CLI reports as a user error (``mmfuse: error: …``, exit code 1)
USER_ERRORS = (MmfuseError, UnknownComponentError, PluginLoadError)


# ---------------------------------------------------------------------------------------------
# inputs


class Inputs:
    """What the cases read: a directory for their files, the sample table, tiny tokenizers, a checkpoint."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.table = make_sample_table(12, seed=0)
        self._files = 0

    def file(self, name: str) -> Path:
        """A fresh path ``<dir>/<n>/<name>`` (cases never share a file)."""
        self._files += 1
        folder = self.dir / str(self._files)
        folder.mkdir()
        return folder / name

    def csv(self, edit: Callable[[pd.DataFrame], Any] | None = None, name: str = "table.csv") -> str:
        """The sample table, changed in place by ``edit``, written to a fresh CSV file."""
        table = self.table.copy()
        if edit is not None:
            edit(table)
        path = self.file(name)
        table.to_csv(path, index=False)
        return str(path)

    @cached_property
    def tokenizers(self) -> dict[str, Any]:
        return {"dna": Enformer("tiny").tokenizer, "rna": NucleotideTransformer("tiny", modality="rna").tokenizer,
                "protein": ESM2("tiny").tokenizer}  # fmt: skip

    @cached_property
    def checkpoint(self) -> Path:
        """``last.ckpt`` of a one-step quickstart run (30 tissue targets; short sequences, small batches)."""
        runs = self.dir / "fit-runs"
        with contextlib.redirect_stdout(io.StringIO()), _in_process():
            main(["fit", "--config", str(QUICKSTART), "--data.init_args.sample.size=12",
                  "--data.init_args.split.val_fraction=0.25", "--data.init_args.loader.batch_size=4",
                  "--data.init_args.lengths.max={dna: 256, rna: 256, protein: 128}", "--trainer.max_steps=1",
                  "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.val_check_interval=1",
                  "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
                  "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={runs}"])  # fmt: skip
        (last,) = runs.glob("*/*/checkpoints/last.ckpt")
        return last


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("bad-input"))


_in_process = bare_argv  # sys.argv of a bare `mmfuse`, os.environ restored after the run


# ---------------------------------------------------------------------------------------------
# entry points: each returns a function of Inputs that is expected to raise

EntryPoint = Callable[[Inputs], Any]


def _row(table: pd.DataFrame, record: str) -> int:
    return int(np.flatnonzero(table["transcript_id"] == record)[0])


def put(column: str, value: Any, record: str = FIRST) -> Callable[[pd.DataFrame], None]:
    """An edit setting one cell of the table."""

    def edit(table: pd.DataFrame) -> None:
        table[column] = table[column].astype(object)
        table.loc[_row(table, record), column] = value

    return edit


def letter(column: str, position: int, text: str, insert: bool = False) -> Callable[[pd.DataFrame], None]:
    """An edit writing ``text`` over (or, with ``insert``, into) the first record's sequence at ``position``
    (past its end: after it)."""

    def edit(table: pd.DataFrame) -> None:
        i = _row(table, FIRST)
        sequence = table.loc[i, column]
        table.loc[i, column] = sequence[:position] + text + sequence[position + (0 if insert else len(text)) :]

    return edit


def drop(*columns: str) -> Callable[[pd.DataFrame], None]:
    return lambda table: table.drop(columns=list(columns), inplace=True)


def isoform(edit: Callable | None = None, read: tuple[str, ...] = ("dna", "rna", "protein"),
            **options: Any) -> EntryPoint:  # fmt: skip
    """``IsoformExpression(**options)`` over the edited sample table: ``setup()``, then ``attach_tokenizers``
    with the tiny backbones' tokenizers of the modalities ``read``."""

    def run(inputs: Inputs) -> None:
        dm = IsoformExpression(inputs.csv(edit), **{"split": {"val_fraction": 0.25}, **options})
        dm.setup("fit")
        dm.attach_tokenizers({m: inputs.tokenizers[m] for m in read})

    return run


def table_file(name: str, write: Callable[[pd.DataFrame, Path], Any]) -> EntryPoint:
    """``IsoformExpression`` over the sample table written to ``name`` by ``write(table, path)``."""

    def run(inputs: Inputs) -> None:
        path = inputs.file(name)
        write(inputs.table.copy(), path)
        dm = IsoformExpression(str(path), split={"val_fraction": 0.25})
        dm.setup("fit")

    return run


def _gzipped(table: pd.DataFrame, path: Path) -> None:
    path.write_bytes(gzip.compress(table.to_csv(index=False).encode()))


def _truncated_gzip(table: pd.DataFrame, path: Path) -> None:
    data = gzip.compress(table.to_csv(index=False).encode())
    path.write_bytes(data[: len(data) // 2])


def _latin1(table: pd.DataFrame, path: Path) -> None:
    table.loc[3, "transcript_id"] = "SYNT-café"
    path.write_bytes(table.to_csv(index=False).encode("latin-1"))


def _duplicate_column(table: pd.DataFrame, path: Path) -> None:
    table.insert(3, "gene_id", table["gene_id"], allow_duplicates=True)
    table.to_csv(path, index=False)


def classification(edit: Callable | None = None, **options: Any) -> EntryPoint:
    """``SequenceClassification`` of ``expression_level`` (low/medium/high) from proteins."""

    def run(inputs: Inputs) -> None:
        dm = SequenceClassification(inputs.csv(edit), modalities={"protein": "Protein"},
                                    label_column="expression_level", split={"val_fraction": 0.25},
                                    **options)  # fmt: skip
        dm.setup("fit")
        dm.attach_tokenizers({"protein": inputs.tokenizers["protein"]})

    return run


def context(categories: list[str]) -> EntryPoint:
    """A context column (HepG2/K562; the first record MCF-7) read by ``ContextEmbedding(categories)``."""

    def edit(table: pd.DataFrame) -> None:
        table["Context"] = ["HepG2" if i % 2 else "K562" for i in range(len(table))]
        table.loc[_row(table, FIRST), "Context"] = "MCF-7"

    def run(inputs: Inputs) -> None:
        dm = SequenceClassification(
            inputs.csv(edit), modalities={"context": "Context"}, label_column="expression_level",
        )  # fmt: skip
        dm.attach_tokenizers({"context": ContextEmbedding(categories).tokenizer})

    return run


def fit(edit: Callable | None = None) -> EntryPoint:
    """``Trainer.fit`` of a protein-only regression task on the edited sample table (one step)."""

    def run(inputs: Inputs) -> None:
        dm = IsoformExpression(
            inputs.csv(edit), modalities={"protein": "Protein"}, split={"val_fraction": 0.25},
            loader={"batch_size": 8},
        )
        task = RegressionTask({"protein": ESM2("tiny")}, adapter=partial(ConcatFusion, hidden_dim=8),
                              head=partial(MLPHead, hidden_dims=[8]), target_names=dm.target_names)  # fmt: skip
        trainer = L.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                            default_root_dir=inputs.file("fit"))  # fmt: skip
        trainer.fit(task, dm)

    return run


def two_genes(table: pd.DataFrame) -> None:
    table.drop(table.index[~table["gene_id"].isin(["SYNG00000", "SYNG00001"])], inplace=True)


def empty_split(name: str, edit: Callable | None = None, **options: Any) -> EntryPoint:
    """The ``name`` loader of a protein-only ``IsoformExpression`` whose ``name`` split has no record."""

    def run(inputs: Inputs) -> None:
        dm = IsoformExpression(inputs.csv(edit), modalities={"protein": "Protein"}, **options)
        dm.attach_tokenizers({"protein": inputs.tokenizers["protein"]})
        getattr(dm, f"{name}_dataloader")()

    return run


def cli(*args: str) -> None:
    """Runs ``mmfuse ARGS`` in-process and raises what it reported.

    Exit code 1: re-raises the user error behind it, after checking that the command printed it as
    ``mmfuse: error: <message>``. Exit code 2 (jsonargparse): re-raises the ``SystemExit``, what was
    printed in its ``stderr`` attribute.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()), _in_process():
            main(list(args))
    except SystemExit as exit_:
        if exit_.code != 1:
            exit_.stderr = printed.getvalue()  # type: ignore[attr-defined]
            raise
        error: BaseException | None = exit_.__context__  # main raises SystemExit(1) from None, while handling it
        while error is not None and not isinstance(error, USER_ERRORS):
            error = error.__cause__ or error.__context__
        assert error is not None, f"exit code 1 without a user error:\n{printed.getvalue()}"
        assert f"mmfuse: error: {error}" in printed.getvalue(), printed.getvalue()
        raise error from None
    raise AssertionError(f"`mmfuse {' '.join(args)}` succeeded")


def cli_config(old: str, new: str, *args: str) -> EntryPoint:
    """``mmfuse fit`` with the quickstart config, ``old`` replaced by ``new`` in its YAML (runs written beside it)."""

    def run(inputs: Inputs) -> None:
        config = inputs.file("config.yaml")
        text = QUICKSTART.read_text().replace("save_dir: runs", f"save_dir: {config.parent}")
        assert old in text
        config.write_text(text.replace(old, new))
        cli("fit", "--config", str(config), *args)

    return run


def cli_test(checkpoint: Callable[[Inputs], Path], *args: str) -> EntryPoint:
    """``mmfuse test`` of the quickstart config with the checkpoint ``checkpoint(inputs)``."""

    def run(inputs: Inputs) -> None:
        cli("test", "--config", str(QUICKSTART), "--data.init_args.sample.size=12",
            "--data.init_args.split.test_fraction=0.25", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={inputs.file('runs')}", "--ckpt_path", str(checkpoint(inputs)),
            *[a(inputs) if callable(a) else a for a in args])  # fmt: skip

    return run


def truncated(inputs: Inputs) -> Path:
    data = inputs.checkpoint.read_bytes()
    path = inputs.file("truncated.ckpt")
    path.write_bytes(data[: len(data) // 2])
    return path


def rewritten(edit: Callable[[dict], Any]) -> Callable[[Inputs], Path]:
    """The shared checkpoint with its ``hyper_parameters`` changed by ``edit`` (plain data: it still loads
    with ``weights_only=True``)."""

    def write(inputs: Inputs) -> Path:
        content = torch.load(inputs.checkpoint, map_location="cpu", weights_only=True)
        edit(content["hyper_parameters"])
        path = inputs.file("edited.ckpt")
        torch.save(content, path)
        return path

    return write


def other_adapter(hparams: dict) -> None:
    hparams["adapter"] = {"class_path": "mmfuse.adapters.CrossAttentionFusion", "init_args": {"hidden_dim": 64}}


def remote_code(hparams: dict) -> None:
    hparams["backbones"]["protein"]["init_args"].update(source="/tmp/evil-model", trust_remote_code=True)


def saved(obj: Any) -> Callable[[Inputs], Path]:
    """A checkpoint file holding ``obj`` (written by ``torch.save``)."""

    def write(inputs: Inputs) -> Path:
        path = inputs.file("other.ckpt")
        torch.save(obj, path)
        return path

    return write


def modelgenerator_table(inputs: Inputs) -> str:
    """The sample table under the column names of the ModelGenerator data set (``labels_0`` … ``labels_29``)."""
    names = {"DNA": "dna_seq", "RNA": "rna_seq", "Protein": "protein_seq"}
    names |= {tissue: f"labels_{i}" for i, tissue in enumerate(GTEX_TISSUES)}
    path = inputs.file("modelgenerator.csv")
    inputs.table.rename(columns=names).to_csv(path, index=False)
    return f"--data.init_args.source.path={path}"


# genome, peaks and TF proteins ---------------------------------------------------------------

CONTIGS = ("chr1", "chr8", "chr9")
PROTEINS = ">sp|P55317|FOXA1_HUMAN Hepatocyte nuclear factor 3-alpha OS=Homo sapiens GN=FOXA1\nMLGTVKMEGHESNDWNS\n" \
           ">CTCF repressor\nMEGDAVEAIVEESETFIKGKERK\n"  # fmt: skip
PEAKS = "chr1\t100\t160\tFOXA1:HepG2\nchr1\t300\t360\tCTCF:HepG2\nchr8\t500\t560\tCTCF:K562\n"


def tf_files(inputs: Inputs, peaks: str = PEAKS, fai: str | None = None) -> dict[str, str]:
    """TFBinding's ``peaks``, ``genome`` and ``proteins`` files; ``fai`` is written as the genome's index."""
    rng = np.random.default_rng(0)
    genome = inputs.file("genome.fa")
    genome.write_text("".join(f">{c}\n{''.join(rng.choice(list('ACGT'), size=1000))}\n" for c in CONTIGS))
    if fai is not None:
        Path(f"{genome}.fai").write_text(fai)
    (genome.parent / "peaks.bed").write_text(peaks)
    (genome.parent / "proteins.fasta").write_text(PROTEINS)
    return {"peaks": str(genome.parent / "peaks.bed"), "genome": str(genome),
            "proteins": str(genome.parent / "proteins.fasta")}  # fmt: skip


def tf_binding(peaks: str = PEAKS, fai: str | None = None, **options: Any) -> EntryPoint:
    def run(inputs: Inputs) -> None:
        TFBinding(tf_files(inputs, peaks, fai), window=20, **options).setup("fit")

    return run


BAD_FAI = "chr1\tnot-a-number\n"


def corrupt_index(inputs: Inputs) -> None:
    open_genome(tf_files(inputs, fai=BAD_FAI)["genome"])


# single cells ----------------------------------------------------------------------------------


def cells(bc1: dict[str, float], genes: tuple[str, ...] = ("G0001", "G0002", "G0003"), tokenize: bool = False,
          ) -> EntryPoint:  # fmt: skip
    """``CellClassification`` of a dense CSV of 6 cells × ``genes``, the values of cell ``bc1`` set by ``bc1``;
    with ``tokenize``, read by the tiny Geneformer."""

    def run(inputs: Inputs) -> None:
        table = pd.DataFrame(np.arange(18, dtype=float).reshape(6, 3) + 1, columns=list(genes))
        for gene, value in bc1.items():
            table.loc[1, gene] = value
        table.insert(0, "cell_id", [f"bc{i}" for i in range(6)])
        table.insert(1, "cell_type", ["T cell", "B cell"] * 3)
        path = inputs.file("cells.csv")
        table.to_csv(path, index=False)
        dm = CellClassification(str(path), split={"val_fraction": 0.25})
        dm.setup("fit")
        if tokenize:
            dm.attach_tokenizers({"cell": Geneformer("tiny").tokenizer})

    return run


def geneformer_with_pickled_code(inputs: Inputs) -> None:
    path = inputs.file("tokens.pkl")
    path.write_bytes(pickle.dumps(os.system))  # unpickling it would hand back a function that runs commands
    Geneformer("tiny", token_dictionary=str(path))


# ---------------------------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    """One bad input: ``entry_point(inputs)`` raises exactly ``error``, its message holding all of ``must_contain``."""

    id: str
    entry_point: EntryPoint
    error: type[BaseException]
    must_contain: tuple[str, ...]


CASES = [
    # sequences: letters, whitespace, empty, too long
    Case("dna-unknown-letter-Z", isoform(letter("DNA", 10, "Z")), DataError,
         (FIRST, "column 'DNA'", "letter 'Z' at position 10", "write unknown bases as N")),
    Case("dna-iupac-R", isoform(letter("DNA", 10, "R")), DataError,
         (FIRST, "letter 'R'", "IUPAC ambiguity codes", "write ambiguous and unknown bases as N")),
    Case("dna-iupac-Y", isoform(letter("DNA", 10, "y")), DataError,
         (FIRST, "letter 'y'", "IUPAC ambiguity codes", "write ambiguous and unknown bases as N")),
    Case("dna-written-with-U", isoform(letter("DNA", 10, "U")), DataError,
         (FIRST, "letter 'U'", "replace U by T")),
    Case("rna-unknown-letter-X", isoform(letter("RNA", 10, "X")), DataError,
         (FIRST, "column 'RNA'", "NucleotideTransformer", "write unknown bases as N")),
    Case("protein-unknown-letter-J", isoform(letter("Protein", 10, "J")), DataError,
         (FIRST, "column 'Protein'", "letter 'J'", "write unknown residues as X")),
    Case("protein-internal-stop", isoform(letter("Protein", 10, "*")), DataError,
         (FIRST, "letter '*'", "translate only up to the first stop")),
    Case("dna-line-break", isoform(letter("DNA", 60, "\n", insert=True)), DataError,
         (FIRST, "letter '\\n' at position 60", "is whitespace", r".str.replace(r'\s+', '', regex=True)")),
    Case("protein-trailing-space", isoform(letter("Protein", 10**4, " ", insert=True)), DataError,
         (FIRST, "letter ' '", "is whitespace", "Remove them from the column")),
    Case("dna-empty-missing-modalities-error", isoform(put("DNA", ""), missing_modalities="error"), DataError,
         (FIRST, "empty sequences", "1 lack dna", "missing_modalities: mask")),
    Case("protein-too-long-no-crop", isoform(put("Protein", LONG_PROTEIN), lengths={"crop": {"protein": "error"}}),
         DataError, (FIRST, "longer than ESM2 accepts (1022 letters)",
                     "`lengths: {max: {protein: 1022}, crop: {protein: start}`")),
    Case("rna-too-long-no-crop", isoform(put("RNA", LONG_RNA)), DataError,
         (FIRST, "more than NucleotideTransformer accepts", "`lengths: {max: {rna: 12282}}`", "keeps the 3' end")),
    Case("dna-longer-than-enformer-reads", isoform(put("DNA", "ACGT" * 100_000)), DataError,
         (FIRST, "400000 letters is longer than Enformer accepts (393216 letters)", "raise the backbone's max_length")),
    # tables and labels
    Case("table-parquet-named-csv", table_file("table.csv", lambda t, p: t.to_parquet(p)), DataError,
         ("table.csv is a Parquet file but is named .csv", "rename it table.parquet")),
    Case("table-csv-named-parquet", table_file("table.parquet", lambda t, p: t.to_csv(p, index=False)), DataError,
         ("table.parquet is named .parquet but is not a Parquet file", "rename it .csv or .tsv")),
    Case("table-gzip-named-csv", table_file("table.csv", _gzipped), DataError,
         ("table.csv is gzip-compressed but its name does not say so", "rename it table.csv.gz")),
    Case("table-gz-not-compressed",
         table_file("table.csv.gz", lambda t, p: t.to_csv(p, index=False, compression=None)), DataError,
         ("table.csv.gz is named .gz but is not gzip-compressed (it is plain text)", "rename it table.csv")),
    Case("table-truncated-gzip", table_file("table.csv.gz", _truncated_gzip), DataError,
         ("cannot read", "table.csv.gz", "damaged or truncated", "write it again")),
    Case("table-empty-file", table_file("table.csv", lambda t, p: p.write_bytes(b"")), DataError,
         ("table.csv", "is empty (0 bytes)")),
    Case("table-not-utf8", table_file("table.csv", _latin1), DataError,
         ("table.csv is not UTF-8 text (line 5)", "save it as UTF-8")),
    Case("table-column-named-twice", table_file("table.csv", _duplicate_column), DataError,
         ("table.csv names 'gene_id' (columns 2, 4) more than once", "rename the columns")),
    Case("record-without-id", isoform(put("transcript_id", None)), DataError,
         ("1 records of", "have no id in column 'transcript_id' (the first at data row 1)", "id_column: null")),
    Case("missing-sequence-column", isoform(drop("Protein")), DataError,
         ("lacks column(s) 'Protein'", "Its columns are: transcript_id", "`modalities.protein`")),
    Case("missing-id-column", isoform(drop("transcript_id")), DataError,
         ("lacks column(s) 'transcript_id'", "Set the data module's `id_column`")),
    Case("missing-target-columns", isoform(drop("Liver", "Lung")), DataError,
         ("lacks column(s) 'Liver', 'Lung'", "Set the data module's `target_columns`")),
    Case("nan-target", isoform(put("Liver", float("nan"))), DataError,
         (FIRST, "(Liver: nan)", "nan_targets: drop")),
    Case("inf-target", isoform(put("Liver", float("inf"))), DataError,
         (FIRST, "(Liver: inf)", "nan_targets: drop")),
    Case("target-not-a-number", isoform(put("Liver", "1,5")), DataError,
         (FIRST, "(Liver: 1,5)", "Fix the table")),
    Case("missing-label", classification(put("expression_level", None)), DataError,
         (FIRST, "no label in column 'expression_level'", "missing_labels: drop")),
    Case("label-not-among-classes", classification(put("expression_level", "very high"),
                                                   classes=["low", "medium", "high"]), DataError,
         (FIRST, "'very high'", "['low', 'medium', 'high']", "Add them to `classes`")),
    Case("duplicate-ids", isoform(put("transcript_id", FIRST, record=SECOND)), DataError,
         (FIRST, "column 'transcript_id'", "Make them unique", "set id_column to a column")),
    Case("modality-mapped-to-numbers", isoform(read=("dna",), modalities={"dna": "Liver"}), DataError,
         (FIRST, "column 'Liver'", "not text", "Map dna to the column holding its sequences in `modalities`")),
    Case("unknown-split-name", isoform(lambda t: t.insert(0, "split", ["holdout"] + ["train"] * (len(t) - 1))),
         DataError, (FIRST, "holds 'holdout'", "use train, val or test")),
    Case("trainer-fit-unknown-letter", fit(letter("Protein", 10, "J")), DataError,
         (FIRST, "column 'Protein'", "letter 'J'", "write unknown residues as X")),
    # (raised by val_dataloader() itself: inside Trainer.fit, Lightning 2.6 would leave DataLoader.__init__
    # patched after the error, see lightning.fabric.utilities.data._replace_dunder_methods)
    Case("empty-val-split", empty_split("val", split={"val_fraction": 0.0}), DataError,
         ("'val' split", "val_fraction 0.0", "raise val_fraction", "trainer.limit_val_batches: 0")),
    Case("tiny-table-empty-val-split", empty_split("val", edit=two_genes), DataError,
         ("'val' split", "split by 'gene_id' (2 values)", "about 0.2 values validate", "raise val_fraction")),
    Case("empty-test-split-of-split-column", empty_split("test", edit=lambda t: t.insert(0, "split", "train")),
         DataError, ("'test' split", "'split' column marks no record test", "test on another table")),
    Case("modality-without-column", lambda i: IsoformExpression(i.csv(), modalities={"rna": "RNA"})
         .attach_tokenizers({"rna": i.tokenizers["rna"], "protein": i.tokenizers["protein"]}), DataError,
         ("maps only ['rna']", "add ['protein'] to the data module's `modalities`")),
    Case("table-file-missing", lambda i: IsoformExpression(str(i.dir / "no-such.csv")).setup("fit"), DataError,
         ("no-such.csv", "does not exist", "check the data module's `path`")),
    Case("table-unknown-format", lambda i: IsoformExpression(i.csv(name="table.xlsx")).setup("fit"), DataError,
         ("table.xlsx", "name it .csv, .tsv or .parquet")),
    Case("crop-unknown-policy", lambda i: IsoformExpression("sample", lengths={"crop": {"rna": "middle"}}), ConfigError,
         ("{'rna': 'middle'}", "center, end, start or error")),
    Case("max-lengths-unknown-modality", lambda i: IsoformExpression("sample", lengths={"max": {"protien": 1000}}),
         ConfigError, ("['protien']", "not among the modalities ['dna', 'protein', 'rna']")),
    Case("missing-modalities-unknown-value", lambda i: IsoformExpression("sample", missing_modalities="drop"),
         ConfigError, ("`missing_modalities`", "'mask' or 'error'", "'drop'")),
    # components and config keys
    Case("batch-size-zero", lambda i: IsoformExpression("sample", loader={"batch_size": 0}), ConfigError,
         ("`loader.batch_size` must be a whole number of at least 1, not 0",)),
    Case("cli-eval-batch-size-negative", cli_config("batch_size: 16", "batch_size: 16\n      eval_batch_size: -4"),
         ConfigError, ("`loader.eval_batch_size` must be a whole number of at least 1, not -4",)),
    Case("cli-learning-rate-zero", cli_config("lr: 0.003", "lr: 0.0"), ConfigError,
         ("the learning rate is 0.0, so nothing would train", "model.init_args.optimizer.init_args.lr")),
    Case("cli-learning-rate-negative", cli_config("lr: 0.003", "lr: -0.1"), ConfigError,
         ("the optimizer refuses its options: Invalid learning rate: -0.1", "model.init_args.optimizer.init_args")),
    Case("cli-unwritable-log-directory",
         lambda i: cli("fit", "--config", str(QUICKSTART), f"--trainer.logger.init_args.save_dir={i.checkpoint}/runs"),
         ConfigError, ("trainer.logger.init_args.save_dir: cannot write in", "last.ckpt/runs (Not a directory",
                       "choose a directory you can write to")),
    Case("cli-unwritable-predictions",
         cli_test(lambda i: i.checkpoint, lambda i: f"--predictions.output={i.checkpoint}/p.csv"), ConfigError,
         ("predictions.output: cannot write in", "last.ckpt (", "choose a directory")),
    Case("cli-misspelled-data-class", cli_config("class_path: IsoformExpression", "class_path: IsoformExpresion"),
         SystemExit, ("config.yaml:40: Unknown data module (data.class_path) 'IsoformExpresion'",
                      "Did you mean 'IsoformExpression'?")),
    Case("cli-wrong-type", cli_config("max_epochs: 10", "max_epochs: ten"), SystemExit,
         ("config.yaml:8: option trainer.max_epochs takes int or null, not 'ten'",)),
    Case("cli-unknown-backbone", cli_config("class_path: ESM2", "class_path: ESM3"), SystemExit,
         ("Unknown backbone 'ESM3'", "Known backbones:", "Did you mean 'ESM2'?")),
    Case("registry-unknown-backbone", lambda i: BACKBONES.get("ESM3"), UnknownComponentError,
         ("Unknown backbone 'ESM3'", "Known backbones:", "Did you mean 'ESM2'?")),
    Case("registry-unknown-adapter", lambda i: ADAPTERS.get("ConcatFuson"), UnknownComponentError,
         ("Unknown adapter 'ConcatFuson'", "Did you mean 'ConcatFusion'?")),
    Case("cli-misspelled-adapter-option", cli_config("hidden_dim: 64", "hiden_dim: 64"), SystemExit,
         ("'hiden_dim' is not an option of ConcatFusion; did you mean 'hidden_dim'?",)),
    Case("cli-misspelled-section", cli_config("trainer:", "traner:"), SystemExit,
         ("'traner' is not a section of the config; did you mean 'trainer'?",)),
    Case("cli-misspelled-trainer-option", cli_config("max_epochs: 10", "max_epoch: 10"), SystemExit,
         ("'max_epoch' is not an option of the Trainer; did you mean 'max_epochs'?",)),
    Case("unknown-preset", lambda i: ESM2("esm2_t99"), ConfigError,
         ("Unknown ESM2 preset 'esm2_t99'", "Known presets: esm2_t12_35M_UR50D", "set `source`")),
    Case("cli-unknown-preset", cli_config("init_args: {preset: tiny}\n", "init_args: {preset: esm2_t99}\n"),
         ConfigError, ("Unknown ESM2 preset 'esm2_t99'", "Known presets:")),
    # checkpoints
    Case("checkpoint-truncated", cli_test(truncated), MmfuseError,
         ("truncated.ckpt", "truncated", "use an earlier checkpoint")),
    Case("checkpoint-not-lightning", cli_test(saved({"weight": torch.zeros(2)})), MmfuseError,
         ("other.ckpt", "is not a Lightning checkpoint", "no state_dict")),
    Case("checkpoint-with-pickled-code", cli_test(saved({"state_dict": {}, "hook": os.system})), MmfuseError,
         ("other.ckpt", "holds Python objects", "weights_only=True", "Use a checkpoint written by `mmfuse fit`")),
    Case("checkpoint-missing", cli_test(lambda i: i.dir / "no-such.ckpt"), MmfuseError,
         ("no-such.ckpt", "does not exist", "pass the .ckpt file written by `mmfuse fit`")),
    Case("checkpoint-other-number-of-targets",
         cli_test(lambda i: i.checkpoint, "--data.init_args.target_columns=[Liver, Lung]"), CheckpointMismatchError,
         ("trained with 30 targets (Adipose Tissue, Adrenal Gland, Bladder, Blood, …)",
          "the data module gives 2 (Liver, Lung)", "give the data the trained targets")),
    Case("checkpoint-other-target-names",
         cli_test(lambda i: i.checkpoint, modelgenerator_table, "--data.init_args.columns=modelgenerator"),
         CheckpointMismatchError, ("trained with target_names Adipose Tissue, Adrenal Gland",
                                   "'labels_0' in the data module", "Use the config the checkpoint was trained with")),
    Case("checkpoint-of-another-adapter", cli_test(rewritten(other_adapter)), CheckpointMismatchError,
         ("edited.ckpt", "model.init_args.adapter.class_path is CrossAttentionFusion in the checkpoint, ConcatFusion "
          "in this config", "builds the model from the config, never from a checkpoint", "config.yaml")),
    Case("checkpoint-without-a-modality", cli_test(rewritten(lambda h: h["backbones"].pop("dna"))),
         CheckpointMismatchError, ("edited.ckpt", "model.init_args.backbones.dna is only in this config")),
    Case("checkpoint-turning-on-remote-code", cli_test(rewritten(remote_code)), CheckpointMismatchError,
         ("edited.ckpt", "sets model.init_args.backbones.protein.init_args.trust_remote_code: True",
          "never takes from a checkpoint", "set it in your own config")),
    # genome and TF-binding files
    Case("genome-index-unreadable", corrupt_index, DataError,
         ("genome.fa", "cannot read or build the index", "Delete", "genome.fa.fai to have it rebuilt")),
    Case("tf-binding-genome-index-unreadable", tf_binding(fai=BAD_FAI), DataError,
         ("genome.fa", "cannot read or build the index", "genome.fa.fai to have it rebuilt")),
    Case("genome-missing", lambda i: open_genome(i.dir / "no-such.fa"), DataError,
         ("no-such.fa", "does not exist", "give the path of the genome FASTA")),
    Case("tf-binding-missing-contig", tf_binding(PEAKS + "chrUn_1\t5\t60\tCTCF:HepG2\n"), DataError,
         ("chrUn_1", "e.g. line 4", "missing_contig: skip")),
    Case("tf-binding-tf-without-protein", tf_binding(PEAKS + "chr1\t600\t660\tGATA1:HepG2\n"), DataError,
         ("GATA1", "proteins.fasta", "Add them to the proteins FASTA", "missing_tf: skip")),
    Case("tf-binding-malformed-bed-line", tf_binding("chr1\t100\t160\tFOXA1:HepG2\nchr1\tten\t160\tCTCF:HepG2\n"),
         DataError, ("peaks.bed:2", "start 'ten'", "must be whole numbers")),
    # single cells and contexts
    Case("cell-negative-expression", cells({"G0002": -1.0}), DataError,
         ("cell 'bc1'", "gene 'G0002'", "-1.0", "give raw counts")),
    Case("cell-nan-expression", cells({"G0002": float("nan")}), DataError,
         ("cell 'bc1'", "gene 'G0002'", "nan", "fill missing values with 0")),
    Case("cell-genes-unknown-to-geneformer",
         cells({"G0001": 0, "G0002": 0}, genes=("G0001", "G0002", "ENSG3"), tokenize=True), DataError,
         ("record 'bc1'", "no expressed gene of the Geneformer token dictionary", "check the gene ids")),
    Case("context-unknown-category", context(["HepG2", "K562"]), DataError,
         (FIRST, "'MCF-7' is not among the 2 context categories", "('HepG2', 'K562')", "unknown: shared")),
    Case("geneformer-dictionary-with-pickled-code", geneformer_with_pickled_code, ConfigError,
         ("tokens.pkl", "system", "refuses to build", "convert the file to JSON")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_naming_the_record_and_the_fix(case: Case, inputs: Inputs) -> None:
    with pytest.raises(case.error) as info:
        case.entry_point(inputs)
    error = info.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    if type(error) is SystemExit:  # jsonargparse: exit code 2, the message printed
        assert error.code == 2
        message = error.stderr  # type: ignore[attr-defined]
    else:
        message = str(error)
    missing = [part for part in case.must_contain if part not in message]
    assert not missing, f"{missing} not in the message:\n{message}"


def test_case_ids_are_unique_and_every_case_checks_its_message() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    assert all(case.must_contain for case in CASES)


# ---------------------------------------------------------------------------------------------
# policies that accept odd input


def _batches(inputs: Inputs, edit: Callable | None = None) -> dict[str, torch.Tensor]:
    """The tokens of every record (in record order), per modality."""
    dm = IsoformExpression(
        inputs.csv(edit), split={"val_fraction": 0.25, "predict": "all"}, loader={"eval_batch_size": 64},
    )
    dm.setup("predict")
    dm.attach_tokenizers(inputs.tokenizers)
    (batch,) = list(dm.predict_dataloader())
    return {m: tokens["input_ids"] for m, tokens in batch["inputs"].items()}


def _lower(table: pd.DataFrame) -> None:
    for column in ("DNA", "RNA", "Protein"):
        table[column] = table[column].str.lower()


@pytest.mark.parametrize(
    "edit",
    [_lower, lambda t: t.__setitem__("RNA", t["RNA"].str.replace("U", "T")),
     lambda t: t.__setitem__("Protein", t["Protein"].where(t["Protein"].fillna("") == "", t["Protein"] + "*"))],
    ids=["lowercase", "rna-written-with-T", "protein-with-final-stop"],
)  # fmt: skip
def test_accepted_spellings_give_the_tokens_of_the_plain_ones(inputs: Inputs, edit: Callable) -> None:
    expected, given = _batches(inputs), _batches(inputs, edit)
    assert expected.keys() == given.keys() == {"dna", "rna", "protein"}
    for modality, tokens in expected.items():
        assert torch.equal(given[modality], tokens), modality


def test_empty_sequences_under_mask_are_counted_absent(inputs: Inputs) -> None:
    dm = IsoformExpression(inputs.csv(put("DNA", "")), split={"val_fraction": 0.25})
    dm.setup("fit")
    dm.attach_tokenizers(inputs.tokenizers)
    noncoding = int(inputs.table["Protein"].isna().sum() + (inputs.table["Protein"] == "").sum())
    assert dm.absent_counts == {"dna": 1, "rna": 0, "protein": noncoding}


def test_long_sequences_with_max_lengths_are_cropped_and_counted(inputs: Inputs) -> None:
    dm = IsoformExpression(
        inputs.csv(put("Protein", LONG_PROTEIN)), split={"val_fraction": 0.25}, lengths={"max": {"protein": 1022}},
    )
    dm.setup("fit")
    dm.attach_tokenizers(inputs.tokenizers)
    assert dm.crop_counts == {"protein": 1}
    assert max(len(s) for s in dm.split_sequences("all", "protein")) == 1022


def test_bad_targets_and_labels_can_be_dropped_and_are_counted(inputs: Inputs) -> None:
    dm = IsoformExpression(inputs.csv(put("Liver", float("inf"))), nan_targets="drop", split={"val_fraction": 0.25})
    dm.setup("fit")
    assert FIRST not in dm.split_ids("train") + dm.split_ids("val") + dm.split_ids("test")
    dm = SequenceClassification(
        inputs.csv(put("expression_level", None)), modalities={"protein": "Protein"},
        label_column="expression_level", missing_labels="drop",
    )  # fmt: skip
    dm.setup("fit")
    assert FIRST not in dm.split_ids("train") + dm.split_ids("val") + dm.split_ids("test")


def test_records_without_a_gene_are_split_each_on_its_own_and_counted(inputs: Inputs, caplog) -> None:
    import logging

    def no_genes(table: pd.DataFrame) -> None:
        table["gene_id"] = None

    with caplog.at_level(logging.INFO):
        dm = IsoformExpression(inputs.csv(no_genes), split={"val_fraction": 0.25, "test_fraction": 0.25})
        dm.setup("fit")
    sizes = {split: len(dm.split_ids(split)) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == len(inputs.table) and min(sizes.values()) > 0  # not one pseudo-gene "None"
    assert f"{len(inputs.table)} records have no 'gene_id' (e.g. '{FIRST}'); each is split on its own" in caplog.text


def test_tf_binding_skips_missing_contigs_and_tfs_and_counts_them(inputs: Inputs) -> None:
    peaks = PEAKS + "chrUn_1\t5\t60\tCTCF:HepG2\nchr1\t600\t660\tGATA1:HepG2\n"
    dm = TFBinding({**tf_files(inputs, peaks), "missing_contig": "skip", "missing_tf": "skip"}, window=20)
    dm.setup("fit")
    assert dm.summary.skipped_contigs == {"chrUn_1": 1} and dm.summary.skipped_tfs == {"GATA1": 1}
    assert dm.summary.bound == 3


def test_the_docs_count_the_cases():
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert f"feeds {len(CASES)} bad inputs" in (docs / "reliability.md").read_text().replace("\n", " ")
    assert f"({len(CASES)} in all)" in (docs / "faq.md").read_text().replace("\n", " ")

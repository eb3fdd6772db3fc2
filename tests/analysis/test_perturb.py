"""``mmfuse perturb``: the planted regulators found, overexpression towards a state, equality with ``mmfuse predict``
of the hand-perturbed cell, the perturbation types, the statistics, and bad input refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmfuse.analysis.perturb import perturb_ranked, statistics
from mmfuse.cli import main
from mmfuse.data.samples.cells import REGULATORS, make_cell_sample
from tests.helpers.in_process import bare_argv, mmfuse_stdout

CONFIG = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "max_epochs": 4, "enable_model_summary": False, "enable_progress_bar": False,
                "logger": False},
    "model": {"class_path": "ClassificationTask", "init_args": {
        "backbones": {"cell": {"class_path": "Geneformer", "init_args": {"preset": "tiny"}}},
        "adapter": {"class_path": "ConcatFusion", "init_args": {"hidden_dim": 32, "pooling": "cls"}},
        "head": {"class_path": "LinearHead"},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3.0e-3}}}},
    "data": {"class_path": "CellClassification", "init_args": {
        "source": "sample", "split": {"val_fraction": 0.1, "test_fraction": 0.2}, "loader": {"batch_size": 32}}},
}  # fmt: skip
STATES = "{column: cell_type, start: %s, goal: %s}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``(config, checkpoint)``: a tiny Geneformer classifier of the sample's lineages (4 epochs, ~8 s)."""
    root = tmp_path_factory.mktemp("perturb")
    (root / "config").mkdir()
    config = root / "config" / "perturb.yaml"  # not the run's own config.yaml, which fit writes
    config.write_text(yaml.safe_dump(CONFIG))
    with bare_argv():
        main(["fit", "--config", str(config), f"--trainer.default_root_dir={root / 'run'}"])
    (checkpoint,) = root.rglob("epoch=*.ckpt")
    return config, checkpoint


def _perturb(config: Path, out: Path, *args: str, ckpt: Path | None = None) -> pd.DataFrame:
    extra = ["--ckpt_path", str(ckpt)] if ckpt is not None else []
    mmfuse_stdout("perturb", "--config", str(config), *extra, f"--perturbation.output={out}",
                  f"--trainer.default_root_dir={out.parent}",
                  "--perturbation.plots=false", *args)  # fmt: skip
    return pd.read_csv(out)


# ---------------------------------------------------------------------------------------------
# the planted biology


@pytest.mark.parametrize("lineage", ["erythroid", "lymphoid", "myeloid"])
def test_deleting_a_lineages_regulators_moves_its_cells_away_from_it_most(trained, tmp_path, lineage):
    config, ckpt = trained
    other = "myeloid" if lineage != "myeloid" else "erythroid"
    stats = _perturb(config, tmp_path / "d.csv", f"--perturbation.cell_states={STATES % (lineage, other)}",
                     "--perturbation.rank_by=from_start", "--perturbation.cells.max_cells=80", ckpt=ckpt)  # fmt: skip
    top = stats.sort_values("from_start", ascending=False)["perturbation"].head(5).tolist()
    regulators = [g for g, driven in REGULATORS.items() if driven == lineage]
    assert set(regulators) <= set(top), (lineage, top)
    assert stats["fdr"].between(0, 1).all() and stats["p_value"].notna().sum() > 50
    assert stats["rank"].tolist() == list(range(1, len(stats) + 1))
    assert (stats["cells"] + stats["cells_not_expressed"] == 80).all()  # every gene: perturbed or counted


def test_overexpressing_a_regulator_moves_cells_of_another_lineage_towards_its_own(trained, tmp_path):
    config, ckpt = trained
    stats = _perturb(config, tmp_path / "o.csv", "--perturbation.type=overexpress", "--perturbation.genes=[G0090]",
                     f"--perturbation.cell_states={STATES % ('lymphoid', 'erythroid')}", ckpt=ckpt)  # fmt: skip
    (row,) = stats.itertuples()
    assert row.perturbation == "G0090" and row.cells > 100
    assert row.to_goal > 0 and row.to_goal > row.null_to_goal and row.fdr < 0.05
    assert row.d_erythroid > 0 > row.d_lymphoid  # the classifier's erythroid probability rises


def test_a_perturbation_equals_the_prediction_of_the_hand_perturbed_cell(trained, tmp_path):
    """The analysis cannot drift from the model: deleting a gene, or overexpressing one, in silico gives the
    probabilities that ``mmfuse predict`` gives the cell written without that gene (with it highest)."""
    config, ckpt = trained
    counts, genes, obs = make_cell_sample(600, 0)
    cell = int(np.flatnonzero(obs.cell_type == "erythroid")[0])
    own, foreign = "G0090", "G0094"  # an erythroid and a myeloid regulator
    deleted, raised = counts[cell].copy(), counts[cell].copy()
    deleted[genes.index(own)] = 0
    raised[genes.index(foreign)] = 10**6
    table = pd.DataFrame(np.stack([counts[cell], deleted, raised]), columns=genes)
    table.insert(0, "cell_type", "erythroid")
    table.insert(0, "cell_id", ["original", "deleted", "overexpressed"])
    source = tmp_path / "cells.csv"
    table.to_csv(source, index=False)
    data = [f"--data.init_args.source={source}", "--data.init_args.classes=[erythroid, lymphoid, myeloid]",
            "--data.init_args.split={val_fraction: 0, test_fraction: 0}"]
    mmfuse_stdout("predict", "--config", str(config), *data, "--ckpt_path", str(ckpt),
                  f"--trainer.default_root_dir={tmp_path}",
                  f"--predictions.output={tmp_path / 'p.csv'}")  # fmt: skip
    predicted = pd.read_csv(tmp_path / "p.csv").set_index("cell_id")
    for kind, gene, edited in (("delete", own, "deleted"), ("overexpress", foreign, "overexpressed")):
        _perturb(config, tmp_path / "s.csv", *data, f"--perturbation.type={kind}", f"--perturbation.genes=[{gene}]",
                 "--perturbation.cells.filter={cell_id: [original]}", ckpt=ckpt)  # fmt: skip
        (row,) = pd.read_csv(tmp_path / "s_cells.csv").itertuples()
        expressed = counts[cell, genes.index(gene)] > 0
        assert (row.perturbation, row.status) == (gene, "perturbed" if expressed else "added")
        for name in ("erythroid", "lymphoid", "myeloid"):
            after = predicted.loc["original", name] + getattr(row, f"d_{name}")
            assert abs(after - predicted.loc[edited, name]) < 1e-5, (kind, name)
    assert row.d_myeloid > 0.01  # the overexpressed myeloid regulator moves the prediction itself


# ---------------------------------------------------------------------------------------------
# the perturbations and the statistics


def test_perturbation_types_move_genes_as_documented():
    r = np.arange(10, 18)
    assert perturb_ranked(r, [12], "delete", 8).tolist() == [10, 11, 13, 14, 15, 16, 17]
    assert perturb_ranked(r, [15, 12], "overexpress", 8).tolist() == [15, 12, 10, 11, 13, 14, 16, 17]
    assert perturb_ranked(r, [99], "overexpress", 8).tolist() == [99, *range(10, 18)]  # added at the front
    assert perturb_ranked(r, [11], "activate", 8).tolist() == [11, 10, *range(12, 18)]  # 1st quartile -> front
    assert perturb_ranked(r, [14], "activate", 8, 1).tolist() == [10, 11, 12, 14, 13, 15, 16, 17]  # 3rd -> 2nd: 3
    assert perturb_ranked(r, [10], "inhibit", 8, 2).tolist() == [11, 12, 13, 14, 15, 10, 16, 17]  # 1st -> 3rd: 5
    assert perturb_ranked(r, [14], "inhibit", 8, 2).tolist() == [10, 11, 12, 13, 15, 16, 17, 14]  # past the end
    # quartiles of the encoding the model reads (the first 4 of a longer cell)
    assert perturb_ranked(r, [11], "inhibit", 4, 3).tolist() == [10, 12, 13, 11, 14, 15, 16, 17]


def test_statistics_count_mean_test_and_rank():
    rng = np.random.default_rng(0)
    rows = []
    for c in range(20):
        rows.append({"cell": f"c{c}", "perturbation": "A", "status": "perturbed", "rank": 0.0,
                     "shift": 0.5 + 0.01 * rng.normal(), "null_shift": 0.1 + 0.01 * rng.normal()})
        rows.append({"cell": f"c{c}", "perturbation": "B", "status": "perturbed" if c < 10 else "not_expressed",
                     "rank": 3.0 if c < 10 else np.nan, "shift": 0.1 + 0.01 * rng.normal() if c < 10 else np.nan,
                     "null_shift": 0.1 + 0.01 * rng.normal() if c < 10 else np.nan})  # fmt: skip
    table = statistics(pd.DataFrame(rows), ["shift"], "shift", 20, True).set_index("perturbation")
    assert table.index.tolist() == ["A", "B"] and table["rank"].tolist() == [1, 2]
    assert table.loc["A", "cells"] == 20 and table.loc["B", "cells"] == 10
    assert table.loc["B", "cells_not_expressed"] == 10
    assert table.loc["A", "shift"] == pytest.approx(0.5, abs=0.01)
    assert table.loc["A", "p_value"] < 1e-4 < table.loc["B", "p_value"]  # A beats its null; B does not
    assert table.loc["A", "fdr"] == pytest.approx(min(1.0, table.loc["A", "p_value"] * 2))


def test_zero_shot_combinations_lists_and_gene_shifts(trained, tmp_path):
    config, _ = trained
    stats = _perturb(config, tmp_path / "z.csv", "--perturbation.anchor=G0090", "--perturbation.genes=[G0000, G0091]",
                     "--perturbation.cells.filter={cell_type: [erythroid]}", "--perturbation.cells.max_cells=12",
                     "--perturbation.gene_shifts=true")  # fmt: skip
    assert set(stats.perturbation) == {"G0090", "G0090+G0000", "G0090+G0091"}
    assert not any(c.startswith("d_") for c in stats.columns) and (stats["shift"] >= 0).all()  # no head zero-shot
    cells = pd.read_csv(tmp_path / "z_cells.csv")
    assert len(cells) == 3 * 12 and set(cells.status) <= {"perturbed", "not_expressed"}
    shifts = pd.read_csv(tmp_path / "z_gene_shifts.csv")
    assert {"perturbation", "gene", "mean_shift", "cells"} <= set(shifts.columns)
    assert "G0090" not in set(shifts.loc[shifts.perturbation == "G0090", "gene"])  # the perturbed gene itself
    assert (shifts["mean_shift"] >= -1e-6).all() and (shifts["cells"] <= 12).all()
    together = _perturb(config, tmp_path / "t.csv", "--perturbation.genes=[G0090, G0091]",
                        "--perturbation.together=true", "--perturbation.cells.max_cells=10")  # fmt: skip
    assert together.perturbation.tolist() == ["G0090+G0091"]
    assert together.loc[0, "cells"] + together.loc[0, "cells_not_expressed"] == 10


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(("args", "message"), [
    (["--perturbation.genes=[G00900]"], "unknown gene 'G00900', neither in the data nor in the cell backbone's "
                                        "vocabulary (100 genes); the closest known ids: G0090"),
    (["--perturbation.cell_states={column: disease, start: dcm}"], "names the column 'disease', which sample does "
                                                                  "not have"),
    (["--perturbation.cell_states={column: cell_type, start: neuron}"], "perturbation.cell_states names ['neuron'], "
                                                                       "not values of the column 'cell_type'"),
    (["--perturbation.cells.filter={cell_type: [neuron]}"], "no cell is left to perturb: none has cell_type in "
                                                            "['neuron']"),
    (["--perturbation.embedding=fused"], "perturbation.embedding fused: an adapter that was not trained"),
])  # fmt: skip
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(trained, tmp_path, args, message, capsys):
    config, _ = trained
    out = tmp_path / "out" / "p.csv"
    with pytest.raises(SystemExit) as exit_, bare_argv():
        main(["perturb", "--config", str(config), f"--perturbation.output={out}",
              f"--trainer.default_root_dir={tmp_path}", *args])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mmfuse: error:")]
    assert exit_.value.code == 1 and len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err and not out.parent.exists()


def test_a_gene_of_the_data_the_vocabulary_lacks_is_named(trained, tmp_path, capsys):
    config, _ = trained
    counts, genes, obs = make_cell_sample(20, 0)
    table = pd.DataFrame(counts, columns=genes).assign(GX0001=3)
    table.insert(0, "cell_type", obs.cell_type)
    table.insert(0, "cell_id", obs.cell_id)
    table.to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(SystemExit), bare_argv():
        main(["perturb", "--config", str(config), f"--data.init_args.source={tmp_path / 'cells.csv'}",
              f"--trainer.default_root_dir={tmp_path}",
              "--perturbation.genes=[GX0001]", f"--perturbation.output={tmp_path / 'p.csv'}"])
    assert ("mmfuse: error: perturbation.genes: 'GX0001' is a gene of the data but not of the cell backbone's "
            "vocabulary (100 genes): the model never reads it") in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()

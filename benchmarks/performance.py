"""Speed and memory of mmfuse training, measured side by side in one run; prints one table per question.

Each measurement runs in its own child process (so peak RSS is that configuration's own) and the
tables report ratios between measurements of the same run: these machines are noisy, absolute
seconds are not comparable between runs. Sections:

1. ``overhead``  mmfuse (Lightning ``Trainer.fit``) vs. a hand-written PyTorch loop over the same
                 modules, optimizer and pre-collated batches: steps/s and overhead (target ≤ 5 %).
2. ``cache``     frozen backbones, epoch 2 onward, ``embedding_cache`` vs. none: time per epoch and the
                 largest difference between the two loss curves (same seed; target ≥ 10×, identical).
3. ``bucketing`` length bucketing vs. padding each batch to its longest sequence (mmfuse's default) on
                 transcripts of 200 nt–12 kb (log-normal): time per epoch and the share of padded tokens,
                 also what padding every batch to the longest sequence of the data would waste.
4. ``memory``    every row of every table carries the child's peak RSS (and peak CUDA memory on a GPU);
                 this section adds the preset-sized fine-tuning run with and without activation checkpointing.
5. ``scaling``   1×, 4× and 16× the data: time per epoch (should grow linearly) and peak RSS (flat).
6. ``startup``   ``mmfuse --help`` and the time to the first finished training step, from a cold process.
7. ``modelgenerator``  the configuration genbio-ai's ModelGenerator 0.1.3 was measured on (Enformer dim
                 192 depth 2 on 16,384 bp, fully trained; 256-wide 4-layer BERT on RNA ≤ 1,000 nt and the
                 ESM2-8M architecture on protein ≤ 500 aa, both with LoRA r=4 on query/value; concat fusion
                 with projection 256 and MLP 256; AdamW; fp32; batch 2), trained by mmfuse, and its
                 cross-attention configuration (the same Enformer and BERT, both fully trained, no protein;
                 DNA tokens query the RNA tokens, 16 heads; mean pooling, MLP 128); with
                 ``--mg-python`` (a Python with modelgenerator installed, see
                 benchmarks/modelgenerator_baseline.py) ModelGenerator runs both configurations in the
                 same run; otherwise the table compares with the published 0.63 steps/s and 2.4 GB (concat).
                 Both read their batches through their own data modules (tokenizing included).

8. ``precision``  ``32-true`` against ``bf16-mixed``, alternating, on the Nucleotide Transformer v2-50M +
                 ESM2-35M architectures (RNA 1,000 nt, protein 500 aa, batch 4, fully trained; ``nt_esm``) and
                 on the ModelGenerator configuration of section 7.

Every training-step row (sections 1, 4, 7, 8) also gives the model FLOPs of one step (counted by
``torch.utils.flop_counter``) and their rate as a share of the fp32 (and, for bf16, the bf16) matmul peak
measured in the same run (``benchmarks/_utilisation.py``).

``quick`` and ``preset`` are the two model sizes: the quickstart's tiny backbones on the bundled
sample data, and the ModelGenerator configuration above (preset-sized: real layer widths).

    python benchmarks/performance.py                       # every section
    python benchmarks/performance.py overhead cache --steps 30
    python benchmarks/performance.py modelgenerator --mg-python /work/mgvenv/bin/python
    git worktree add ../base main && python benchmarks/performance.py overhead modelgenerator --baseline ../base

Results and the commands that produced them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _utilisation import matmul_peak, peak_dtype, step_flops, utilisation  # noqa: E402  (this script's folder)

SECTIONS = ("overhead", "cache", "bucketing", "memory", "scaling", "startup", "modelgenerator", "precision")
#: ModelGenerator 0.1.3's `MMSequenceRegression` on this configuration, measured on a 2-core CPU (issue 6)
MG_PUBLISHED = {"steps_per_s": 0.63, "peak_rss_mb": 2400.0}


# ------------------------------------------------------------------------------------------------
# child side: builds one configuration and measures it; prints one JSON line


def _peak() -> dict[str, float]:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _bert_dir(directory: Path, hidden: int, layers: int, heads: int, max_len: int, dropout: float = 0.0) -> Path:
    """A random BERT reading RNA letter by letter (one token per letter), saved like a hub checkpoint.

    Its feed-forward is 6 × hidden wide so a layer has as many weights (and FLOPs) as ModelGenerator's
    RNA encoder of the same width, whose SwiGLU feed-forward has three 4 × hidden matrices."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    letters = "ACGUN"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + list(letters))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")  # every letter a token
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(directory)  # fmt: skip
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=6 * hidden,
                        max_position_embeddings=max_len + 2, pad_token_id=0, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)  # fmt: skip
    BertModel(config).save_pretrained(directory)
    return directory


def _enformer_dir(directory: Path, dim: int, depth: int) -> Path:
    from enformer_pytorch import EnformerConfig

    # dim_divisible_by 16 keeps the official ratio (1536 / 128) for dim 192, as in the ModelGenerator baseline
    config = EnformerConfig(dim=dim, depth=depth, heads=8, dim_divisible_by=16, output_heads=dict(human=8),
                            target_length=-1)  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(config.to_json_string())
    return directory


def build(size: str, frozen: bool, work: Path, cache: bool = False, lora: bool = True, checkpointing: bool = False,
          compile_backbones: bool | list[str] = False) -> Any:  # fmt: skip
    """The task of a size: ``quick`` (quickstart), ``preset`` (the ModelGenerator concat configuration),
    ``preset_attention`` (its cross-attention configuration: DNA + RNA, fully fine-tuned) or ``nt_esm`` (the
    Nucleotide Transformer v2-50M and ESM2-35M architectures, RNA and protein only)."""
    from mmfuse.adapters import ConcatFusion, CrossAttentionFusion
    from mmfuse.backbones import ESM2, Enformer, HuggingFaceEncoder, NucleotideTransformer
    from mmfuse.backbones.finetune import FineTuning, LoraOptions
    from mmfuse.cache import CacheOptions
    from mmfuse.training import RegressionTask
    from mmfuse.training.heads import MLPHead

    if size == "nt_esm":  # issue 19's mixed-precision case: two transformer backbones, fully trained
        backbones = {
            "rna": NucleotideTransformer("nt_v2_50m_multi_species", modality="rna", pretrained=False,
                                         finetune=FineTuning(gradient_checkpointing=checkpointing)),
            "protein": ESM2("esm2_t12_35M_UR50D", pretrained=False,
                            finetune=FineTuning(gradient_checkpointing=checkpointing)),
        }  # fmt: skip
        adapter, head = (lambda d: ConcatFusion(d, hidden_dim=256)), (lambda i, o: MLPHead(i, o, [256], dropout=0.1))
    elif size == "quick":
        backbones = {
            "dna": Enformer("tiny", finetune=FineTuning(freeze=frozen)),
            "rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=frozen)),
            "protein": ESM2("tiny", finetune=FineTuning(freeze=frozen)),
        }
        adapter, head = (lambda d: ConcatFusion(d, hidden_dim=64)), (lambda i, o: MLPHead(i, o, [128], dropout=0.1))
    elif size == "preset_attention":  # ModelGenerator's isoform_expression_dna_rna_attention.yaml, scaled down
        backbones = {
            "dna": Enformer(source=str(_enformer_dir(work / "enformer", 192, 2)), pretrained=False,
                            use_tf_gamma=False, finetune=FineTuning(gradient_checkpointing=checkpointing)),
            "rna": HuggingFaceEncoder(str(_bert_dir(work / "bert", 256, 4, 4, 1000, dropout=0.1)), modality="rna",
                                      max_length=1002, finetune=FineTuning(gradient_checkpointing=checkpointing)),
        }  # fmt: skip

        # 16 heads of 384 / 16 = 24 (ModelGenerator's CrossAttentionFusion: head size = DNA width / heads), one
        # layer, plain residual, no feed-forward; MLPPoolAdapter's mean pooling and hidden [128]
        def adapter(d: dict[str, int]) -> Any:
            return CrossAttentionFusion(d, queries=["dna"], num_layers=1, num_heads=16, head_dim=d["dna"] // 16,
                                        norm="none", feed_forward=False)  # fmt: skip

        head = lambda i, o: MLPHead(i, o, [128], dropout=0.1)  # noqa: E731
    else:
        lora_options = LoraOptions(r=4, alpha=8, dropout=0.1, targets=["query", "value"])
        adapt = FineTuning(freeze=frozen, lora=None if frozen or not lora else lora_options,
                           gradient_checkpointing=checkpointing)  # fmt: skip
        backbones = {
            "dna": Enformer(
                source=str(_enformer_dir(work / "enformer", 192, 2)),
                pretrained=False,
                use_tf_gamma=False,
                finetune=FineTuning(freeze=frozen, gradient_checkpointing=checkpointing),
            ),
            "rna": HuggingFaceEncoder(
                str(_bert_dir(work / "bert", 256, 4, 4, 1000)), modality="rna", max_length=1002, finetune=adapt
            ),
            "protein": ESM2("esm2_t6_8M_UR50D", pretrained=False, finetune=adapt),
        }
        adapter, head = (lambda d: ConcatFusion(d, hidden_dim=256)), (lambda i, o: MLPHead(i, o, [256], dropout=0.1))
    from mmfuse.data import GTEX_TISSUES

    options = CacheOptions(directory=str(work / "cache")) if cache else None
    return RegressionTask(backbones, adapter=adapter, head=head, target_names=list(GTEX_TISSUES),
                          embedding_cache=options, compile_backbones=compile_backbones)  # fmt: skip


def _random(alphabet: str, n: int, rng: Any) -> str:
    return "".join(rng.choice(list(alphabet), size=n))


def data(size: str, records: int, work: Path, batch: int, lengths: str = "max", bucketing: bool = False,
         genes_factor: int = 1, workers: int = 0) -> Any:  # fmt: skip
    """A data module: the sample data set (``quick``) or random sequences at the preset's lengths."""
    import numpy as np

    from mmfuse.data import IsoformExpression
    from mmfuse.data.samples.isoform import make_sample_table

    if size == "quick" and lengths == "max":
        return IsoformExpression(
            "sample", split={"column": "none", "val_fraction": 0.1, "test_fraction": 0.1},
            loader={"batch_size": batch}, sample={"size": 240 * genes_factor},
        )  # fmt: skip
    rng = np.random.default_rng(0)
    table = make_sample_table(num_genes=max(8, records // 2), seed=0).iloc[:records].reset_index(drop=True)
    if lengths == "max":
        rna_len, prot_len, dna_len = [1000] * len(table), [500] * len(table), 16_384
    else:  # transcripts of 200 nt – 12 kb, log-normal around 2 kb (GENCODE-like); proteins a third
        rna_len = np.clip(rng.lognormal(np.log(2000), 0.9, len(table)), 200, 12_000).astype(int).tolist()
        prot_len = [max(30, n // 3 - 20) for n in rna_len]
        dna_len = 1024 if size == "quick" else 16_384
        # crops to what the models read (as the data module's max_lengths would): the preset models at most
        # 1,000 nt and 500 aa, the tiny ESM2 1,022 aa
        rna_max, prot_max = (1000, 500) if size.startswith("preset") else (12_000, 1000)
        rna_len, prot_len = [min(n, rna_max) for n in rna_len], [min(n, prot_max) for n in prot_len]
    table["DNA"] = [_random("ACGT", dna_len, rng) for _ in range(len(table))]
    table["RNA"] = [_random("ACGU", n, rng) for n in rna_len]
    table["Protein"] = [_random("ACDEFGHIKLMNPQRSTVWY", n, rng) for n in prot_len]
    table["split"] = "train"
    table.loc[table.index[-max(2, len(table) // 10) :], "split"] = "val"
    path = work / f"table-{size}-{lengths}-{records}.parquet"
    table.to_parquet(path)
    modalities = {"nt_esm": {"rna": "RNA", "protein": "Protein"}, "preset_attention": {"dna": "DNA", "rna": "RNA"}}.get(
        size
    )
    return IsoformExpression(
        str(path), modalities=modalities,
        loader={"batch_size": batch, "bucketing": bucketing, "num_workers": workers},
    )  # fmt: skip


def _trainer(work: Path, callbacks: list, **kwargs: Any) -> Any:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    defaults = dict(accelerator="auto", devices=1, logger=CSVLogger(work / "logs"), enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    callbacks=callbacks, default_root_dir=work)  # fmt: skip
    return L.Trainer(**(defaults | kwargs))


def measure_steps(spec: dict, work: Path) -> dict:
    """Steps/s of ``spec["mode"]``: ``lightning`` (Trainer.fit) or ``loop`` (hand-written), same batches."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    L.seed_everything(0, verbose=False)
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    matmul_peaks = measure_peaks()  # this process's, just before its steps
    task = build(spec["size"], frozen=False, work=work, checkpointing=spec.get("checkpointing", False),
                 compile_backbones=spec.get("compile", False))  # fmt: skip
    n, warm = spec["steps"], spec["warmup"]
    records = spec["batch"] * (n + warm) * 5 // 4 if spec["mode"] == "datamodule" else spec["batch"] * 8
    dm = data(spec["size"], records=records, work=work, batch=spec["batch"], workers=spec.get("workers", 0))
    dm.setup("fit")
    dm.attach_tokenizers(task.model.tokenizers())
    loader = dm.train_dataloader()
    batches, it = [], iter(loader)
    while len(batches) < 8 and spec["mode"] != "datamodule":
        try:
            batches.append(next(it))
        except StopIteration:
            it = iter(loader)
    plan = [batches[i % len(batches)] for i in range(n + warm)] if batches else []
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    total = sum(p.numel() for p in task.parameters())
    clip = 0.1 if spec["size"].startswith("preset") else None  # as ModelGenerator's isoform configs
    params = [p for p in task.parameters() if p.requires_grad]
    precision = spec.get("precision", "32-true")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def loss_of(batch: dict) -> Any:
        """The training loss of one batch, as the task computes it, in the run's precision."""
        inputs = {m: {k: v.to(device) for k, v in enc.items()} for m, enc in batch["inputs"].items()}
        present = {m: p.to(device) for m, p in batch["present"].items()}
        with torch.autocast(device.type, dtype=peak_dtype(precision), enabled=precision != "32-true"):
            pred = task.model(inputs, present)  # the plain nn.Module, in a hand-written loop
        mean, std = task.objective.target_mean, task.objective.target_std
        return F.mse_loss(pred.float(), (batch["target"].to(device) - mean) / std)

    if spec["mode"] == "loop":
        task.to(device).train()
        optimizer = torch.optim.AdamW(params)
        t0 = 0.0
        for i, batch in enumerate(plan):
            if i == warm:
                t0 = time.perf_counter()
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    else:
        marks: list[float] = []  # end of each training step (across epochs)

        class Clock(L.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())

        task.configure_optimizers = lambda: torch.optim.AdamW(params)
        trainer = _trainer(work, [Clock()], max_steps=n + warm, limit_val_batches=0, max_epochs=-1,
                           gradient_clip_val=clip, precision=precision)  # fmt: skip
        if spec["mode"] == "datamodule":  # the whole data path: reading, tokenizing (collate), batching
            trainer.fit(task, dm)
        else:  # the same pre-collated batches as the loop
            trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(plan, batch_size=None))
        seconds = marks[n + warm - 1] - marks[warm - 1]  # the n steps warm … n + warm - 1
    task.to(device).train()
    one = plan[0] if plan else next(iter(loader))
    flops = step_flops(lambda: loss_of(one).backward())  # the model FLOPs of one step (forward and backward)
    task.zero_grad(set_to_none=True)
    return {
        "steps_per_s": n / seconds,
        "params": total,
        "trainable": trainable,
        "flops": flops,
        "peaks": matmul_peaks,
        **_peak(),
    }


def measure_epochs(spec: dict, work: Path) -> dict:
    """Seconds per training epoch and the per-step losses (frozen backbones, optional cache/bucketing)."""
    import lightning as L

    L.seed_everything(0, verbose=False)
    task = build(spec["size"], frozen=spec.get("frozen", True), work=Path(spec.get("cache_root", work)),
                 cache=spec.get("cache", False))  # fmt: skip
    dm = data(spec["size"], records=spec.get("records", 64), work=work, batch=spec["batch"],
              lengths=spec.get("lengths", "max"), bucketing=spec.get("bucketing", False),
              genes_factor=spec.get("genes_factor", 1))  # fmt: skip
    epochs, losses = [], []
    tokens: dict[str, dict[str, int]] = {}  # per modality: real tokens, batch slots, samples, longest

    prep: list[float] = []

    class Clock(L.Callback):
        def on_fit_start(self, trainer, module):  # runs before the task's (which fills the cache)
            self.fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer, module):
            self.t0 = time.perf_counter()
            if not prep:
                prep.append(self.t0 - self.fit_start)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())
            if trainer.current_epoch == 0:
                for m, enc in batch["inputs"].items():
                    mask = enc.get("attention_mask")
                    if mask is not None:
                        t = tokens.setdefault(m, {"real": 0, "slots": 0, "samples": 0, "longest": 0})
                        t["real"] += int(mask.sum())
                        t["slots"] += mask.numel()
                        t["samples"] += mask.shape[0]
                        t["longest"] = max(t["longest"], mask.shape[1])

        def on_train_epoch_end(self, trainer, module):
            epochs.append(time.perf_counter() - self.t0)

    trainer = _trainer(work, [Clock()], max_epochs=spec["epochs"], limit_val_batches=0)
    trainer.fit(task, dm)
    out = {"epochs": epochs, "losses": losses, "prep": prep[0], **_peak()}
    if tokens:
        real = sum(t["real"] for t in tokens.values())
        out["padding"] = 1 - real / sum(t["slots"] for t in tokens.values())
        out["padding_global"] = 1 - real / sum(t["samples"] * t["longest"] for t in tokens.values())
    out["records"] = len(dm.split_ids("train"))
    return out


def measure_startup(spec: dict, work: Path) -> dict:
    """Seconds from process start to the first finished training step (quickstart through the CLI)."""
    start = float(spec["t_start"])
    import lightning as L

    first: list[float] = []

    class First(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if not first:
                first.append(time.time() - start)
                trainer.should_stop = True

    from mmfuse.cli import MmfuseCLI

    sys.argv = ["mmfuse"]
    cli = MmfuseCLI(["--config", str(REPO / "experiments/quickstart/config.yaml"), "--trainer.accelerator=cpu",
                     f"--trainer.default_root_dir={work}", f"--trainer.logger.init_args.save_dir={work}",
                     "--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0"], run=False)  # fmt: skip
    cli.trainer.callbacks.append(First())
    cli.trainer.fit(cli.model, cli.datamodule)
    return {"first_step_s": first[0], **_peak()}


def child(spec: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="mmfuse-bench-") as tmp:
        work = Path(tmp)
        kind = spec["kind"]
        result = {"steps": measure_steps, "epochs": measure_epochs, "startup": measure_startup}[kind](spec, work)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------------
# parent side


def run_child(spec: dict, tree: Path | None = None) -> dict:
    """Measures ``spec`` in a child process, with this checkout's mmfuse or, with ``tree``, another's."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    if tree is not None:  # that checkout's mmfuse and its own copy of this script (the API it builds with)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    spec = {**spec, "t_start": time.time()}
    script = (tree / "benchmarks" / "performance.py") if tree is not None else Path(__file__)
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree or REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {spec} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    peaks(result.get("peaks"))
    return result


def median_of(repeats: int, specs: dict[str, dict], baseline: Path | None = None) -> dict[str, dict]:
    """Runs each spec ``repeats`` times, alternating between them (so drifts of the machine hit all
    alike), and keeps per spec the run with the median steps/s, with its spread (``min``/``max``). With
    ``baseline`` (another checkout), each child spec also runs there, as ``<name>@baseline``."""
    if baseline is not None:
        specs = {**specs, **{f"{n}@baseline": {**s, "tree": str(baseline)} for n, s in specs.items() if "run" not in s}}
    runs: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(repeats):
        for name, spec in specs.items():
            if "run" in spec:
                runs[name].append(spec["run"]())
            else:
                tree = spec.get("tree")
                child_spec = {k: v for k, v in spec.items() if k != "tree"}
                runs[name].append(run_child(child_spec, Path(tree) if tree else None))
    medians = {}
    for name, r in runs.items():
        rates = sorted(x["steps_per_s"] for x in r)
        medians[name] = {**sorted(r, key=lambda x: x["steps_per_s"])[len(r) // 2], "min": rates[0], "max": rates[-1]}
    return medians


def against_baseline(title: str, results: dict[str, dict], names: list[str]) -> None:
    """Prints this checkout's steps/s relative to the baseline checkout's, per configuration of ``names``."""
    rows = [[name, results[f"{name}@baseline"]["steps_per_s"], results[name]["steps_per_s"],
             f"{results[name]['steps_per_s'] / results[f'{name}@baseline']['steps_per_s']:.3f}×",
             f"{results[f'{name}@baseline']['min']:.3g}–{results[f'{name}@baseline']['max']:.3g}",
             f"{results[name]['min']:.3g}–{results[name]['max']:.3g}"]
            for name in names if f"{name}@baseline" in results]  # fmt: skip
    table(
        f"{title}: this checkout vs. the baseline checkout (median steps/s of alternating runs, spread)",
        ["configuration", "baseline steps/s", "this steps/s", "ratio", "baseline spread", "this spread"],
        rows,
    )


_PEAKS: dict[str, float] = {}


def measure_peaks() -> dict[str, float]:
    """This process's best matmul FLOP/s per precision, now (``_utilisation.matmul_peak``, two sizes)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = (4096, 8192) if device == "cuda" else (1024, 2048)
    return {name: max(matmul_peak(dtype, device, n=n, seconds=0.5) for n in sizes)
            for name, dtype in (("32-true", torch.float32), ("bf16-mixed", torch.bfloat16))}  # fmt: skip


def peaks(seen: dict[str, float] | None = None) -> dict[str, float]:
    """The matmul peaks of this run (FLOP/s per precision): the best of the parent's, measured first, and
    of every child's (``seen``), measured just before its steps, so a moment when the machine was busy
    does not lower the denominator of every row."""
    if not _PEAKS:
        _PEAKS.update(measure_peaks())
    for name, value in (seen or {}).items():
        _PEAKS[name] = max(_PEAKS.get(name, 0.0), value)
    return _PEAKS


UTILISATION = ["GFLOP/step", "% of fp32 peak"]


def utilisation_cells(result: dict, precision: str = "32-true") -> list[Any]:
    """A row's model FLOPs per step and their rate as a share of the fp32 matmul peak (and, for another
    precision, of that dtype's peak too)."""
    flops = result.get("flops")
    if not flops:
        return ["", ""]
    cells: list[Any] = [flops / 1e9, f"{utilisation(flops, result['steps_per_s'], peaks()['32-true']):.0%}"]
    if precision != "32-true":
        cells.append(f"{utilisation(flops, result['steps_per_s'], peaks()[precision]):.0%}")
    return cells


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    def cell(c: Any) -> str:
        if isinstance(c, float):
            return f"{c:,.0f}" if abs(c) >= 1000 else f"{c:.3g}"
        return f"{c:,}" if isinstance(c, int) else str(c)

    cells = [list(header)] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def section_overhead(args: argparse.Namespace) -> None:
    rows = []
    for size, batch in (("quick", 16), ("preset", 2)):
        steps = args.steps * 3 if size == "quick" else args.steps  # quick steps are short: more of them
        res = median_of(args.repeats, {mode: {"kind": "steps", "mode": mode, "size": size, "batch": batch,
                                              "steps": steps, "warmup": args.warmup}
                                       for mode in ("loop", "lightning")}, args.baseline)  # fmt: skip
        if args.baseline:
            against_baseline(f"1. {size}", res, ["loop", "lightning"])
        overhead = res["loop"]["steps_per_s"] / res["lightning"]["steps_per_s"] - 1
        rows.append([size, batch, res["loop"]["steps_per_s"], res["lightning"]["steps_per_s"],
                     f"{overhead:+.1%}", res["loop"]["peak_rss_mb"], res["lightning"]["peak_rss_mb"],
                     *utilisation_cells(res["lightning"])])  # fmt: skip
    table("1. Training step: mmfuse (Lightning) vs. a hand-written PyTorch loop, same modules and batches",
          ["size", "batch", "loop steps/s", "mmfuse steps/s", "overhead", "loop peak RSS MB", "mmfuse peak RSS MB",
           *UTILISATION], rows)  # fmt: skip


def section_cache(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmfuse-cache-") as root:
        for size, batch, records in (("quick", 16, 0), ("preset", 8, 64)):
            base = {"kind": "epochs", "size": size, "batch": batch, "records": records, "epochs": args.epochs}
            plain = run_child(base)
            cached = run_child({**base, "cache": True, "cache_root": f"{root}/{size}"})
            again = run_child({**base, "cache": True, "cache_root": f"{root}/{size}", "epochs": 1})
            later = lambda r: sum(r["epochs"][1:]) / len(r["epochs"][1:])  # noqa: E731
            diff = max(abs(a - b) for a, b in zip(plain["losses"], cached["losses"], strict=True))
            rows.append([size, cached["records"], plain["epochs"][0], later(plain), cached["prep"], cached["epochs"][0],
                         later(cached), again["prep"] + again["epochs"][0], f"{later(plain) / later(cached):.1f}×",
                         f"{diff:.1e}",
                         plain["peak_rss_mb"], cached["peak_rss_mb"]])  # fmt: skip
    table("2. Frozen backbones: embedding cache vs. none (seconds per epoch; epoch 2 onward averaged; filling: "
          "embedding the data set before the first epoch)",
          ["size", "records", "none: epoch 1", "none: later", "cache: filling", "cache: epoch 1", "cache: later",
           "cache: next run, epoch 1",
           "speed-up (later)", "max |Δ loss|", "none peak RSS MB", "cache peak RSS MB"], rows)  # fmt: skip


def section_bucketing(args: argparse.Namespace) -> None:
    rows = []
    for size, batch, records in (("quick", 16, 256), ("preset", 4, 32)):
        base = {"kind": "epochs", "size": size, "batch": batch, "records": records, "epochs": 2,
                "lengths": "transcripts", "frozen": False}  # fmt: skip
        plain = run_child(base)
        bucketed = run_child({**base, "bucketing": True})
        rows.append([size, batch, plain["records"], f"{plain['padding_global']:.0%}", f"{plain['padding']:.0%}",
                     f"{bucketed['padding']:.0%}",
                     plain["epochs"][-1], bucketed["epochs"][-1],
                     f"{plain['epochs'][-1] / bucketed['epochs'][-1]:.2f}×",
                     plain["peak_rss_mb"], bucketed["peak_rss_mb"]])  # fmt: skip
    table("3. Length bucketing vs. none, RNA 200 nt–12 kb (log-normal): padded share of tokens, seconds per epoch",
          ["size", "batch", "records", "padded (global max)", "padded (batch max)", "padded (bucketing)",
           "s/epoch batch max", "s/epoch bucketing",
           "speed-up", "none peak RSS MB", "bucketing peak RSS MB"], rows)  # fmt: skip


def section_memory(args: argparse.Namespace) -> None:
    rows = []
    for label, extra in (("fine-tuning (as section 7)", {}),
                         ("+ gradient_checkpointing on every backbone", {"checkpointing": True})):  # fmt: skip
        res = run_child({"kind": "steps", "mode": "lightning", "size": "preset", "batch": 2, "steps": args.steps,
                         "warmup": args.warmup, **extra})  # fmt: skip
        rows.append([label, res["steps_per_s"], res["peak_rss_mb"], res.get("peak_cuda_mb", ""),
                     *utilisation_cells(res)])  # fmt: skip
    table("4. Peak memory of the preset-sized configuration, with and without activation checkpointing",
          ["configuration", "steps/s", "peak RSS MB", "peak CUDA MB", *UTILISATION], rows)  # fmt: skip


def section_scaling(args: argparse.Namespace) -> None:
    rows, first = [], None
    for factor in (1, 4, 16):
        res = run_child({"kind": "epochs", "size": "quick", "batch": 16, "epochs": 1, "genes_factor": factor,
                         "frozen": False})  # fmt: skip
        first = first or res
        rows.append([f"{factor}×", res["records"], res["epochs"][0], f"{res['epochs'][0] / first['epochs'][0]:.1f}×",
                     res["peak_rss_mb"], f"{res['peak_rss_mb'] / first['peak_rss_mb']:.2f}×"])  # fmt: skip
    table("5. Scaling with the data (quickstart, one epoch)",
          ["data", "training records", "s/epoch", "time ratio", "peak RSS MB", "RSS ratio"], rows)  # fmt: skip


def section_startup(args: argparse.Namespace) -> None:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "mmfuse", "--help"], capture_output=True, text=True, cwd=REPO)
    help_s = time.time() - t0
    assert proc.returncode == 0, proc.stderr
    rss = subprocess.run([sys.executable, "-c", "import resource, mmfuse.cli; "
                          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    first = run_child({"kind": "startup"})
    table("6. Start-up (cold processes)", ["what", "seconds", "peak RSS MB"],
          [["mmfuse --help", help_s, float(rss.stdout.strip() or "nan")],
           ["quickstart: process start → first training step done", first["first_step_s"],
            first["peak_rss_mb"]]])  # fmt: skip


def section_modelgenerator(args: argparse.Namespace) -> None:
    """Both ModelGenerator configurations (concat: DNA + RNA + protein; cross-attention: DNA + RNA), mmfuse
    and, with ``--mg-python``, ModelGenerator itself, every spec alternating with the others."""
    base = {"kind": "steps", "mode": "datamodule", "size": "preset", "batch": 2, "steps": args.steps,
            "warmup": args.warmup}  # fmt: skip
    specs: dict[str, dict] = {"ours": base, "compiled": {**base, "compile": ["dna"], "warmup": args.warmup + 1},
                              "ours_attention": {**base, "size": "preset_attention"}}  # fmt: skip

    def modelgenerator(fusion: str) -> Callable[[], dict]:
        def run() -> dict:
            script = REPO / "benchmarks" / "modelgenerator_baseline.py"
            cmd = [
                args.mg_python,
                str(script),
                f"--steps={args.steps}",
                f"--warmup={args.warmup}",
                f"--fusion={fusion}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"ModelGenerator baseline failed:\n{proc.stderr[-4000:]}")
            return json.loads(lines[-1].removeprefix("RESULT "))

        return run

    if args.mg_python:
        specs["mg"] = {"run": modelgenerator("concat")}
        specs["mg_attention"] = {"run": modelgenerator("attention")}
    results = median_of(args.repeats, specs, args.baseline)
    if args.baseline:
        against_baseline("7. ModelGenerator configurations", results, ["ours", "compiled", "ours_attention"])
    spread = lambda r: f"{r['min']:.3g}–{r['max']:.3g}"  # noqa: E731
    rows, ratios = [], []
    for fusion, ours_names, mg_name in (("concat", ["ours", "compiled"], "mg"),
                                        ("cross-attention", ["ours_attention"], "mg_attention")):  # fmt: skip
        mg = results.get(mg_name)
        for name in ours_names:
            r = results[name]
            label = "mmfuse" + (", compile_backbones: [dna]" if name == "compiled" else "")
            rows.append([fusion, label, r["steps_per_s"], spread(r), r["peak_rss_mb"], r["params"], r["trainable"],
                         *utilisation_cells(r)])  # fmt: skip
            reference = mg or (MG_PUBLISHED if fusion == "concat" else None)
            if reference:
                source = "measured in this run" if mg else "published (issue 6)"
                ratios.append(f"{fusion}, {label} vs ModelGenerator ({source}): "
                              f"{r['steps_per_s'] / reference['steps_per_s']:.2f}× the steps/s, "
                              f"{r['peak_rss_mb'] / reference['peak_rss_mb']:.2f}× the peak RSS")  # fmt: skip
        if mg:
            # the same architecture and batch: its FLOPs per step are ours (FlopCounterMode is not run inside it)
            mg_util = utilisation_cells({**results[ours_names[0]], "steps_per_s": mg["steps_per_s"]})
            rows.append([fusion, "ModelGenerator 0.1.3 (this run)", mg["steps_per_s"], spread(mg), mg["peak_rss_mb"],
                         mg.get("params", ""), mg.get("trainable", ""), *mg_util])  # fmt: skip
    rows.append(["concat", "ModelGenerator 0.1.3 (published)", MG_PUBLISHED["steps_per_s"], "",
                 MG_PUBLISHED["peak_rss_mb"], "", "", "", ""])  # fmt: skip
    table(f"7. The ModelGenerator configurations (batch 2, fp32, CPU; median of {args.repeats} alternating runs)",
          ["fusion", "framework", "steps/s", "spread", "peak RSS MB", "parameters", "trainable", *UTILISATION],
          rows)  # fmt: skip
    print("\n" + "\n".join(ratios))


def section_precision(args: argparse.Namespace) -> None:
    """fp32 against bf16-mixed on the same configurations, alternating, with each dtype's utilisation."""
    rows, ratios = [], []
    for size, batch in (("nt_esm", 4), ("preset", 2)):
        specs = {precision: {"kind": "steps", "mode": "lightning", "size": size, "batch": batch, "steps": args.steps,
                             "warmup": args.warmup, "precision": precision}
                 for precision in ("32-true", "bf16-mixed")}  # fmt: skip
        res = median_of(args.repeats, specs)
        for precision, r in res.items():
            rows.append([size, batch, precision, r["steps_per_s"], f"{r['min']:.3g}–{r['max']:.3g}", r["peak_rss_mb"],
                         *utilisation_cells(r, precision)[:2], utilisation_cells(r, precision)[-1]])  # fmt: skip
        ratios.append(f"{size}: bf16-mixed {res['bf16-mixed']['steps_per_s'] / res['32-true']['steps_per_s']:.2f}× "
                      "the fp32 steps/s")  # fmt: skip
    table(f"8. Mixed precision (CPU: matmul peak fp32 {peaks()['32-true'] / 1e9:.0f}, bf16 "
          f"{peaks()['bf16-mixed'] / 1e9:.0f} GFLOP/s; median of {args.repeats} alternating runs)",
          ["size", "batch", "precision", "steps/s", "spread", "peak RSS MB", *UTILISATION, "% of its dtype's peak"],
          rows)  # fmt: skip
    print("\n" + "; ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=[[], *SECTIONS], default=[], help="default: all")
    parser.add_argument("--steps", type=int, default=20, help="measured training steps")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before measuring")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the cache section")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs (median) in sections 1 and 7")
    parser.add_argument("--mg-python", help="Python of an environment with modelgenerator 0.1.3 (see its script)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of mmfuse (e.g. `git worktree add ../base "
        "main`): sections 1 and 7 also run its code, alternating, and compare",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    import platform

    import torch

    gpu = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    print(f"# mmfuse performance — {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {gpu}")
    print(f"matmul peak measured at the start of this run: fp32 {peaks()['32-true'] / 1e9:.0f} GFLOP/s, bf16 "
          f"{peaks()['bf16-mixed'] / 1e9:.0f} GFLOP/s ('% of fp32 peak': model FLOPs per step × steps/s ÷ the fp32 "
          f"peak, the best measured in the run by then; FLOPs counted by torch.utils.flop_counter)")  # fmt: skip
    for name in args.sections or SECTIONS:
        globals()[f"section_{name}"](args)


if __name__ == "__main__":
    main()

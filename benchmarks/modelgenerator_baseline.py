"""Training-speed baseline: genbio-ai ModelGenerator 0.1.3, multimodal isoform-expression regression.

Run with ModelGenerator's own virtual environment (NOT the project's):

    /work/mgvenv/bin/python benchmarks/modelgenerator_baseline.py --steps 20 --warmup 3 --threads 2
    /work/mgvenv/bin/python benchmarks/modelgenerator_baseline.py --fusion attention   # the cross-attention one

``--fusion attention`` builds ModelGenerator's other isoform configuration,
``experiments/AIDO.MM/configs/isoform_expression_dna_rna_attention.yaml``, at the same scale: the Enformer below
(``backbone``) and the RNA encoder below (``backbone1``) fully fine-tuned without LoRA, with the YAML's hidden and
attention dropout 0.1, no protein; ``adapter``: ``MMFusionSeqAdapter`` with
``fusion=CrossAttentionFusion(num_attention_heads=16)`` (the DNA tokens, 384 wide, query the RNA tokens: 16
heads of 24, query/key/value/dense with biases, 493,056 parameters) and
``adapter=MLPPoolAdapter(pooling=mean_pooling, hidden_sizes=[128], bias=True, dropout=0.1,
dropout_in_middle=False)`` (53,150); 9,182,602 parameters, all trainable (2,678,060 of them Enformer's unused
track heads). The rest (optimizer, scheduler, clipping, data module, timing) as below.

What follows describes ``--fusion concat`` (the default).

What is built (all random weights, nothing downloaded; the Hugging Face hub is never contacted)
-------------------------------------------------------------------------------------------------
``modelgenerator.tasks.MMSequenceRegression`` exactly as ModelGenerator's
``experiments/GB.RNA/multimodal_isoform_expression/configs/isoform_expression_dna_rna_prot_concat.yaml``
wires it (same classes, same argument names), scaled down:

* ``backbone`` (DNA, ``dna_seq``): ``modelgenerator.backbones.enformer`` with ``from_scratch=True`` and
  ``config_overwrites={dim: 192, depth: 2, dim_divisible_by: 16, target_length: 128}``; every other
  ``EnformerConfig`` field at its default (heads 8, attn_dim_key 64, num_downsamples 7 (128 bp bins),
  dropout_rate 0.4, attn_dropout 0.05, pos_dropout 0.01, output_heads human 5313 / mouse 1643).
  ``dim_divisible_by`` must change: the default 128 rounds the conv tower's last width to 256 != dim and
  the model fails; 16 keeps the official model's dim/dim_divisible_by ratio (1536/128 = 192/16 = 12).
  Conv tower widths: stem 96, then 96 -> 112 -> 128 -> 144 -> 160 -> 192.
  ``max_length=16384``; fully trained (``frozen=False``, Enformer has no LoRA in MG).  MG uses its vendored
  copy ``modelgenerator.huggingface_models.enformer_pytorch`` (lucidrains' enformer-pytorch).  Output:
  (B, 128 bins, 384 = 2*dim).  The unused human/mouse track heads stay in the module, as in MG (their
  parameters are counted but get no gradient).
* ``backbone1`` (RNA, ``rna_seq``): ``modelgenerator.backbones.aido_rna_1m_mars`` (class ``GenBioBERT``,
  the AIDO.RNA architecture: pre-LN, RoPE, RMSNorm, SwiGLU, linear biases) built with
  ``from_scratch=True`` and ``config_overwrites={hidden_size: 256, num_hidden_layers: 4,
  num_attention_heads: 4, intermediate_size: 1024, max_position_embeddings: 1024,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}`` (BERT-mini dims L4/H256/A4/I1024).
  ``max_length=1024``; LoRA via ``use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.1,
  lora_target_modules=[query, value]`` (the YAML's alpha = 2r and dropout 0.1).
* ``backbone2`` (protein, ``protein_seq``): ``modelgenerator.backbones.esm2_8m`` (class ``ESM``, HF
  ``EsmModel``) with ``model_path`` pointed at a local directory holding a *random* model with the exact
  facebook/esm2_t6_8M_UR50D config (320 wide, 6 layers, 20 heads, FFN 1280, rotary, token_dropout) and
  the standard 33-token ESM vocabulary; the script writes that directory itself with transformers
  (``--workdir``).  ``max_length=1024``; config_overwrites hidden/attention dropout 0 (as the YAML);
  same LoRA settings as the RNA model.
* ``adapter``: ``modelgenerator.adapters.fusion.MMFusionTokenAdapter`` with
  ``fusion=ConcatFusion(project_size=256, pooling=mean_pooling)`` and
  ``adapter=MLPAdapter(hidden_sizes=[256], bias=True, dropout=0.1, dropout_in_middle=False)``
  (Tanh activation, MG's default).  ``num_outputs=30``, loss ``torch.nn.MSELoss``.
* Optimizer ``torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)``, scheduler
  ``modelgenerator.lr_schedulers.CosineWithWarmup(warmup_ratio=0.01)``, ``gradient_clip_val=0.1``
  (all from the YAML).  fp32, CPU.
* Data: ``modelgenerator.data.IsoformExpression`` (the YAML's data module, same x_col / rename_cols /
  split-file arguments, ``normalize=True``, ``batch_size=2``, ``shuffle=True``, ``num_workers=0``)
  reading random TSV files the script writes under ``--workdir``: DNA 16,384 bp of ACGT, RNA 1,000 nt
  of ACGT (AIDO.RNA uses DNA letters), protein 500 aa of the 20 standard amino acids, 30 float labels.
  All rows have the maximum lengths, so every batch has the same shapes:
  DNA one-hot (2, 16384, 4) -> Enformer (2, 128, 384);
  RNA ids/mask (2, 1002) ([CLS] + 1000 + [SEP]) -> (2, 1002, 256);
  protein ids/mask (2, 502) (<cls> + 500 + <eos>) -> (2, 502, 320);
  fused (2, 768) -> MLP -> (2, 30).
* Training goes through ModelGenerator's own LightningModule (``training_step`` = ``transform`` ->
  ``forward`` -> ``evaluate`` incl. its per-step train metrics) with
  ``lightning.Trainer(max_steps=warmup+steps, accelerator='cpu', precision=32, logger=False,
  enable_checkpointing=False, gradient_clip_val=0.1, limit_val_batches=0, num_sanity_val_steps=0)``,
  i.e. what ``mgen fit`` does minus logging/checkpointing/validation.

Parameter counts of what this builds (printed again by every run)::

    part                                   params    trainable
    DNA Enformer                        4,422,380    4,422,380
      stem (conv 4->96 k15, res conv, attn-pool)    24,576
      conv tower (6 blocks, 96->...->192)          779,968
      transformer (2 layers, 432,640 each)         865,280
      final pointwise (conv 192->384 k1)            74,496
      unused human/mouse track heads             2,678,060  (no gradient)
    RNA GenBioBERT + LoRA               4,230,400       16,384
      token embeddings 16 x 256 (no position table: RoPE)    4,096
      4 layers x 1,056,512 (incl. 4,096 LoRA each), final RMSNorm 256
    protein ESM2-8M + LoRA              7,870,841       30,720
      embeddings 338,880; 6 layers x 1,238,080 (incl. 5,120 LoRA each) + final LN = 7,429,120;
      pooler 102,720 and contact head 121 (HF EsmModel keeps them; unused, frozen)
    fusion ConcatFusion (384/256/320 -> 256 each)  246,528   246,528
    head MLPAdapter 768 -> 256 -> 30 (Tanh)        204,574   204,574
    whole task                         16,974,723    4,920,586

Timing: a callback stamps ``time.perf_counter()`` at the end of each training batch; steps/s is measured
from the end of the last warm-up step to the end of the last step (so it includes data loading,
tokenisation, forward, backward, clipping and the optimizer step).  Peak RSS is ``ru_maxrss`` of this
process plus its children.  With num_workers=0 the only children are ``uname -p`` and ``lscpu``, forked
while ``modelgenerator.main`` is imported; Linux reports a forked child's ru_maxrss as at least the parent's
RSS at fork time (~0.55 GB here), so "self" is the meaningful figure and "self+children" overcounts.  The import time of
``modelgenerator.main`` (their CLI module; it pulls in torch, lightning, transformers, peft, datasets...)
and the peak RSS right after it are taken first thing in this process.

Deviations from the requested configuration
-------------------------------------------
* The RNA "256-wide 4-layer BERT" is MG's native RNA encoder class (GenBioBERT / AIDO.RNA: RoPE,
  RMSNorm, SwiGLU FFN with 1024 hidden, i.e. three 256x1024 matrices per layer), not a vanilla
  GELU/LayerNorm/absolute-position BERT: MG's only generic-HF wrapper (``Huggingface``) refuses
  non-legacy adapters, so it cannot be used inside MMSequenceRegression.
* LoRA alpha (8) and dropout (0.1) follow the YAML's ratios; the brief only fixed r=4.
* The Enformer keeps MG's/enformer-pytorch's default dropouts and unused track heads (see above).
* Random init instead of pretrained weights (the hub is unreachable); this does not change compute.

How ModelGenerator was installed (Python 3.11, CPU only)
-------------------------------------------------------
``pip install modelgenerator==0.1.3`` cannot resolve (bionty==1.3.2 vs. lamindb, enformer-pytorch 0.8.12
pins transformers 4.56.2 vs. MG's transformers==4.38.0), so MG goes in with --no-deps and its
dependencies follow, minus the ones nothing on this path imports (bitsandbytes, wandb, tiledb,
tiledbsoma, tiledbsoma-ml)::

    python3 -m venv /work/mgvenv
    /work/mgvenv/bin/pip install torch==2.13.0
    printf 'torch==2.13.0\\ntransformers==4.38.0\\nnumpy<2\\nenformer-pytorch==0.8.10\\n\\
docstring-inheritance==2.2.2\\npyarrow<20\\ndatasets<4\\nbionty==1.3.2\\nlamindb==1.4.0\\nzarr<3\\n' > constraints.txt
    /work/mgvenv/bin/pip install --no-deps modelgenerator==0.1.3
    /work/mgvenv/bin/pip install -c constraints.txt anndata "biopython>=1.84" "biotite>=1.0.1" \\
        "datasets>=2.14.6" "dm-tree>=0.1.8" docstring-inheritance "einops>=0.8.0" enformer-pytorch \\
        "jsonargparse[signatures]>=4.37.0" "lightning>=2.4.0" lmdb local-attention "ml-collections>=1.0.0" \\
        "numpy<2" "omegaconf>=2.3.0" packaging pandas "peft<=0.13.2" pyfaidx scikit-learn scipy \\
        "torchmetrics>=1.5.0" transformers==4.38.0 torch==2.13.0 "pyarrow<20" "zarr<3" \\
        bionty==1.3.2 lamindb==1.4.0

(docstring-inheritance 3.x and 2.3.0 break MG's import; pyarrow>=20 needs numpy 2; anndata needs
zarr<3; ``modelgenerator.cell.utils`` imports bionty at import time, bionty imports lamindb.)
"""

from __future__ import annotations

import os

# Offline before anything from Hugging Face is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import resource
import sys
import tempfile
import time

# Import cost of ModelGenerator's CLI module, measured first in a fresh process.
_t0 = time.perf_counter()
import modelgenerator.main  # noqa: E402,F401

IMPORT_S = time.perf_counter() - _t0
IMPORT_RSS_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import functools  # noqa: E402
import random  # noqa: E402
import warnings  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
from modelgenerator.adapters import MLPAdapter, MLPPoolAdapter  # noqa: E402
from modelgenerator.adapters.fusion import (  # noqa: E402
    ConcatFusion,
    CrossAttentionFusion,
    MMFusionSeqAdapter,
    MMFusionTokenAdapter,
)
from modelgenerator.backbones import aido_rna_1m_mars, enformer, esm2_8m  # noqa: E402
from modelgenerator.data import IsoformExpression  # noqa: E402
from modelgenerator.lr_schedulers import CosineWithWarmup  # noqa: E402
from modelgenerator.tasks import MMSequenceRegression  # noqa: E402

DNA_LEN, RNA_LEN, PROT_LEN, N_TARGETS, BATCH = 16_384, 1_000, 500, 30, 2
LORA = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_target_modules=["query", "value"])
NO_DROPOUT = dict(hidden_dropout_prob=0, attention_probs_dropout_prob=0)
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]


def write_random_esm2_8m(path: str) -> None:
    """A random EsmModel with facebook/esm2_t6_8M_UR50D's exact config, plus its tokenizer, in ``path``."""
    if os.path.exists(os.path.join(path, "config.json")):
        return
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(ESM_VOCAB) + "\n")
    config = EsmConfig(
        vocab_size=33,
        hidden_size=320,
        num_hidden_layers=6,
        num_attention_heads=20,
        intermediate_size=1280,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        emb_layer_norm_before=False,
        token_dropout=True,
        mask_token_id=32,
        pad_token_id=1,
        architectures=["EsmForMaskedLM"],
    )
    torch.manual_seed(0)
    EsmModel(config).save_pretrained(path)
    EsmTokenizer(os.path.join(path, "vocab.txt")).save_pretrained(path)


def write_random_tsvs(path: str, n_train: int) -> None:
    """Random isoform-expression TSVs at the maximum lengths (the columns IsoformExpression reads)."""
    os.makedirs(path, exist_ok=True)
    rng = random.Random(0)
    header = ["dna_seq", "rna_seq", "protein_seq", *[f"labels_{i}" for i in range(N_TARGETS)]]

    def rows(n):
        for _ in range(n):
            yield [
                "".join(rng.choices("ACGT", k=DNA_LEN)),
                "".join(rng.choices("ACGT", k=RNA_LEN)),
                "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=PROT_LEN)),
                *[f"{rng.gauss(0, 1):.5f}" for _ in range(N_TARGETS)],
            ]

    for name, n in (("train_0.tsv", n_train), ("validation.tsv", 2), ("test.tsv", 2)):
        with open(os.path.join(path, name), "w") as f:
            f.write("\t".join(header) + "\n")
            for r in rows(n):
                f.write("\t".join(r) + "\n")


def _enformer_backbone():
    return functools.partial(
        enformer,
        from_scratch=True,
        max_length=DNA_LEN,
        frozen=False,
        config_overwrites=dict(dim=192, depth=2, dim_divisible_by=16, target_length=DNA_LEN // 128),
    )


def _rna_backbone(fusion: str):
    """BERT-mini dims; LoRA r=4 in the concat configuration, fully fine-tuned with dropout 0.1 in the
    cross-attention one (as ModelGenerator's isoform_expression_dna_rna_attention.yaml)."""
    dims = dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=1024,
    )
    if fusion == "attention":
        return functools.partial(
            aido_rna_1m_mars,
            from_scratch=True,
            max_length=1024,
            frozen=False,
            use_peft=False,
            save_peft_only=False,
            config_overwrites=dict(dims, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
        )
    return functools.partial(
        aido_rna_1m_mars,
        from_scratch=True,
        max_length=1024,
        frozen=False,
        save_peft_only=True,
        config_overwrites=dict(dims, **NO_DROPOUT),
        **LORA,
    )


def build(esm_dir: str, fusion: str = "concat") -> MMSequenceRegression:
    """``concat``: DNA + RNA + protein, ConcatFusion + MLPAdapter (isoform_expression_dna_rna_prot_concat.yaml);
    ``attention``: DNA + RNA, CrossAttentionFusion (16 heads, DNA tokens query the RNA tokens) + MLPPoolAdapter
    (mean pooling, hidden [128], dropout 0.1) (isoform_expression_dna_rna_attention.yaml)."""
    common = dict(
        num_outputs=N_TARGETS,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        lr_scheduler=functools.partial(CosineWithWarmup, warmup_ratio=0.01),
        batch_size=BATCH,
    )
    if fusion == "attention":
        return MMSequenceRegression(
            backbone=_enformer_backbone(),
            backbone1=_rna_backbone(fusion),
            backbone_order=["dna_seq", "rna_seq"],
            adapter=functools.partial(
                MMFusionSeqAdapter,
                fusion=functools.partial(CrossAttentionFusion, num_attention_heads=16),
                adapter=functools.partial(
                    MLPPoolAdapter,
                    pooling="mean_pooling",
                    hidden_sizes=[128],
                    bias=True,
                    dropout=0.1,
                    dropout_in_middle=False,
                ),
            ),
            **common,
        )

    class esm2_8m_local(esm2_8m):  # same class, weights/config/tokenizer from the local random copy
        model_path = esm_dir

    return MMSequenceRegression(
        backbone=_enformer_backbone(),
        backbone1=_rna_backbone(fusion),
        backbone2=functools.partial(
            esm2_8m_local,
            max_length=1024,
            frozen=False,
            save_peft_only=True,
            config_overwrites=dict(NO_DROPOUT),
            **LORA,
        ),
        backbone_order=["dna_seq", "rna_seq", "protein_seq"],
        adapter=functools.partial(
            MMFusionTokenAdapter,
            fusion=functools.partial(ConcatFusion, project_size=256, pooling="mean_pooling"),
            adapter=functools.partial(MLPAdapter, hidden_sizes=[256], bias=True, dropout=0.1, dropout_in_middle=False),
        ),
        **common,
    )


class StepTimer(L.Callback):
    def __init__(self):
        self.stamps: list[float] = []
        self.shapes: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.shapes is None:  # raw batch as the DataLoader yields it (strings + labels)
            self.shapes = {
                k: (len(v), len(v[0])) if isinstance(v, (list, tuple)) else tuple(v.shape) for k, v in batch.items()
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.perf_counter())


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument(
        "--fusion",
        choices=["concat", "attention"],
        default="concat",
        help="concat: DNA + RNA + protein, concat fusion; attention: DNA + RNA, cross-attention fusion",
    )
    ap.add_argument(
        "--workdir",
        default=None,
        help="where the random ESM2-8M copy and the random TSVs are written (default: a new temp dir)",
    )
    args = ap.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mg-baseline-")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    L.seed_everything(42, verbose=False)

    total_steps = args.warmup + args.steps
    esm_dir = os.path.join(args.workdir, "esm2_t6_8M_random")
    data_dir = os.path.join(args.workdir, "isoform_random")
    write_random_esm2_8m(esm_dir)
    write_random_tsvs(data_dir, n_train=BATCH * total_steps)
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(args.workdir, "hf_datasets_cache"))

    columns = ["rna_seq", "dna_seq"] + (["protein_seq"] if args.fusion == "concat" else [])
    data = IsoformExpression(
        data_dir, x_col=columns, rename_cols={c: f"{c}_sequences" for c in columns}, valid_split_name="valid",
        train_split_files=["train_*.tsv"], valid_split_files=["validation.tsv"], test_split_files=["test.tsv"],
        normalize=True, random_seed=42, shuffle=True, pin_memory=False,
        loader={"batch_size": BATCH, "num_workers": 0},
    )
    model = build(esm_dir, args.fusion)
    model.data_module = data  # what `mgen`'s link_arguments("data", "model.init_args.data_module") does
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=total_steps,
        accelerator="cpu",
        devices=1,
        precision=32,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=0.1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        default_root_dir=args.workdir,
    )
    t_fit = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_s = time.perf_counter() - t_fit

    if len(timer.stamps) != total_steps:
        sys.exit(f"expected {total_steps} steps, got {len(timer.stamps)}")
    timed = timer.stamps[-1] - timer.stamps[args.warmup - 1] if args.warmup else None
    if timed is None:  # no warm-up: measure from the first step's end
        timed, n_timed = timer.stamps[-1] - timer.stamps[0], args.steps - 1
    else:
        n_timed = args.steps

    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    parts = {
        "DNA backbone (Enformer)": model.backbone,
        "  of which unused track heads": model.backbone.encoder._heads,
        "RNA backbone (GenBioBERT" + (")" if args.fusion == "attention" else " + LoRA)"): model.backbone1,
        **({"protein backbone (ESM2-8M + LoRA)": model.backbone2} if args.fusion == "concat" else {}),
        f"fusion ({type(model.adapter.fusion_module).__name__})": model.adapter.fusion_module,
        f"head ({type(model.adapter.adapter).__name__})": model.adapter.adapter,
        "whole task": model,
    }
    print()
    print(f"ModelGenerator 0.1.3 MMSequenceRegression, {args.fusion} fusion (random init, CPU, fp32, batch 2)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, lightning {L.__version__}")
    print(f"{'part':<38}{'params':>12}{'trainable':>12}")
    for name, mod in parts.items():
        tot, tr = count(mod)
        print(f"{name:<38}{tot:>12,}{tr:>12,}")
    print(f"raw batch (batch, length): {timer.shapes}")
    print()
    print(f"{'metric':<44}{'value':>12}")
    print(f"{'timed steps':<44}{n_timed:>12}")
    print(f"{'steps/s':<44}{n_timed / timed:>12.3f}")
    print(f"{'seconds/step':<44}{timed / n_timed:>12.3f}")
    print(f"{'fit() wall time incl. setup+warm-up (s)':<44}{fit_s:>12.1f}")
    print(f"{'peak RSS self (MB)':<44}{self_rss:>12.0f}")
    print(f"{'peak RSS children (MB)':<44}{child_rss:>12.0f}")
    print(f"{'peak RSS self+children (MB)':<44}{self_rss + child_rss:>12.0f}")
    print(f"{'import modelgenerator.main (s)':<44}{IMPORT_S:>12.2f}")
    print(f"{'peak RSS after that import (MB)':<44}{IMPORT_RSS_MB:>12.0f}")
    print(f"{'final train loss':<44}{float(trainer.callback_metrics.get('train_loss', float('nan'))):>12.4f}")
    total, trainable = count(model)
    # one machine-readable line for benchmarks/performance.py (section modelgenerator)
    print(
        "RESULT "
        + json.dumps(
            {
                "steps_per_s": n_timed / timed,
                "peak_rss_mb": self_rss,
                "params": total,
                "trainable": trainable,
                "import_s": IMPORT_S,
                "import_rss_mb": IMPORT_RSS_MB,
            }
        )
    )


if __name__ == "__main__":
    main()

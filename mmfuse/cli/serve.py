"""``mmfuse serve DIR``: an exported model (``mmfuse export``) behind ``POST /predict`` (:mod:`mmfuse.hub.serve`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mmfuse.errors import ConfigError

__all__ = ["main", "parser"]

_EPILOG = """\
request:  POST /predict  {"records": [{"dna": "ACGT...", "rna": "ACGU...", "protein": "MKV...", "id": "gene1"}]}
          (any modality may be left out; "id" is optional)
answer:   {"predictions": [{"id": "gene1", <output>: value, ...}], "names": [<output>, ...]}
          the rows `mmfuse predict` writes; 400 malformed body, 413 too large, 422 a record the model refuses
health:   GET /health  ("ok" once the model is loaded)
"""


def parser() -> argparse.ArgumentParser:
    """The options of ``mmfuse serve`` (needs LitServe: its defaults come from :mod:`mmfuse.hub.serve`)."""
    from mmfuse.hub.serve import DEFAULT_MAX_RECORDS, DEFAULT_MAX_REQUEST_BYTES

    p = argparse.ArgumentParser(prog="mmfuse serve", description="Serve an exported model over HTTP (LitServe).",
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", metavar="DIR", help="the directory `mmfuse export --output DIR` wrote")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only; default), 0.0.0.0 or ::")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument("--max_batch_size", type=int, default=16,
                   help="requests predicted together (1: each on its own); default: %(default)s")
    p.add_argument("--batch_timeout", type=float, default=0.01,
                   help="seconds to wait for a batch to fill; default: %(default)s")
    p.add_argument("--max_request_mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                   help="largest request body in MiB (413 past it); default: %(default)s")
    p.add_argument("--max_records", type=int, default=DEFAULT_MAX_RECORDS,
                   help="most records per request (413 past it); default: %(default)s")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "gpu", "mps"],
                   help="auto: a GPU when there is one; default: %(default)s")
    p.add_argument("--workers", type=int, default=1, help="model copies per device, each a process; default: 1")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a request may wait for its answer (504 past it); default: %(default)s")
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: Sequence[str]) -> int:
    """Parses ``argv`` and serves until interrupted (Ctrl+C)."""
    try:
        from mmfuse.hub.serve import serve
    except ImportError as exc:
        raise ConfigError(f"`mmfuse serve` needs LitServe ({exc}): pip install 'mmfuse[serve]'") from exc
    args = parser().parse_args(argv)
    if args.max_request_mb <= 0:
        raise ConfigError(f"--max_request_mb {args.max_request_mb}: give a size above 0")
    from mmfuse.model import FusionModel

    serve(args.dir, FusionModel, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
          batch_timeout=args.batch_timeout, max_request_bytes=int(args.max_request_mb * 2**20),
          max_records=args.max_records, accelerator=args.accelerator, workers=args.workers, timeout=args.timeout,
          log_level=args.log_level)  # fmt: skip
    return 0

"""``mmfuse serve``: an exported model behind an HTTP endpoint (LitServe), with batching across requests.

``POST /predict`` takes ``{"records": [{"dna": "...", "rna": "...", "protein": "...", "id": ...}, ...]}`` (any
modality may be left out, as in training) and answers ``{"predictions": [row, ...], "names": [...]}``, each row
what :meth:`FusionModel.predict_rows` gives for the record. ``GET /health`` answers ``ok`` once the model is loaded.

How a request travels:

1. :class:`RequestGate`, an ASGI middleware in the HTTP process, reads the body (413 past ``max_request_bytes``
   or ``max_records``), parses it and checks its shape (400: not JSON, not an object, ``records`` missing or not
   a list of objects). Nothing malformed reaches the model's process.
2. :class:`FusionAPI` (a ``litserve.LitAPI``) runs in the worker that holds the model: ``decode_request`` checks
   one request's records with :meth:`FusionModel.check_records`; a record the model refuses makes that request a
   :class:`Job` holding a :class:`Refusal` (422, the model's message), never an exception: LitServe answers an
   exception raised for one request of a batch to every request of it (LitServe issue 340).
3. LitServe collects up to ``max_batch_size`` requests (waiting at most ``batch_timeout`` seconds) and hands the
   list of jobs to ``predict`` (its default ``batch``: the list as it is), which concatenates their records into
   one ``predict_rows`` call and splits the rows back per request (its default ``unbatch``: the list returned).
   With ``max_batch_size=1`` LitServe passes one job; ``predict`` takes both. Should the batch fail on the
   model's word (non-finite predictions), each job is predicted again on its own, so only its request is refused.
4. ``encode_response`` answers each request on its own: its rows, or a JSON response with the refusal's status
   and message (the line ``mmfuse predict`` prints after ``mmfuse: error:``).

Every error answer is ``{"detail": message}`` (FastAPI's shape); an unexpected failure is LitServe's 500
``Internal server error`` with the traceback in the server's log only, and the server stays up.

Batching changes no answer where the model is batch-invariant: attention backbones mask padding; a convolutional
DNA trunk (Enformer) sees the padding of shorter windows, so give windows of one length (the usual design).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import litserve as ls
from fastapi.responses import JSONResponse

from mmfuse.errors import ConfigError, InputError, MmfuseError
from mmfuse.hub.layout import PretrainedConfig, read_config
from mmfuse.hub.load import resolve_directory
from mmfuse.hub.predict import ID

__all__ = ["DEFAULT_MAX_RECORDS", "DEFAULT_MAX_REQUEST_BYTES", "FusionAPI", "Job", "Refusal", "RequestGate", "serve"]

#: the largest request body the server reads, in bytes (``mmfuse serve --max_request_mb``)
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
#: the most records one request may hold (``mmfuse serve --max_records``)
DEFAULT_MAX_RECORDS = 1024
#: LitServe's run() takes these hosts only
HOSTS = ("127.0.0.1", "0.0.0.0", "::")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip
_EXAMPLE = '{"records": [{"dna": "ACGT...", "protein": "MKV..."}]}'


def json_type(value: Any) -> str:
    """``value``'s JSON type with its article: ``an object``, ``a string``, …"""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def body_problem(body: Any, max_records: int) -> tuple[int, str] | None:
    """``(status, message)`` when ``body`` (parsed JSON) is no request ``/predict`` takes, else ``None``."""
    if not isinstance(body, dict):
        return 400, f"the request body is {json_type(body)}, not an object; send {_EXAMPLE}"
    if "records" not in body:
        keys = ", ".join(map(repr, body)) or "none"
        return 400, f'the request body has no "records" (its keys: {keys}); send {_EXAMPLE}'
    records = body["records"]
    if not isinstance(records, list):
        return 400, f'"records" is {json_type(records)}, not a list of records; send {_EXAMPLE}'
    if len(records) > max_records:
        return 413, (f"the request holds {len(records):,} records; this server takes at most {max_records:,} per "
                     "request (`mmfuse serve --max_records`): split it")  # fmt: skip
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return 400, f"records[{i}] is {json_type(record)}, not an object of {{modality: sequence}}"
    return None


class RequestGate:
    """ASGI middleware in front of ``POST path``: the body's size, JSON and shape checked before LitServe reads it.

    Answers 413 for a body over ``max_bytes`` (by its ``Content-Length`` or as it arrives) or over
    ``max_records`` records, 400 for a body that is not JSON or not ``{"records": [{...}, ...]}``; otherwise
    passes the body it read on to the app unchanged, declared ``application/json`` whatever the client's
    ``Content-Type`` said. Other paths and methods pass through untouched.
    """

    def __init__(self, app: Any, path: str = "/predict", max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_records: int = DEFAULT_MAX_RECORDS) -> None:  # fmt: skip
        self.app, self.path, self.max_bytes, self.max_records = app, path, max_bytes, max_records

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(scope, receive, send, 413, self.too_large(int(declared)))
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self.refuse(scope, receive, send, 413, self.too_large(size, more))
                return
        body = b"".join(chunks)
        try:  # JSON over HTTP is UTF-8 (RFC 8259), whatever json.loads would guess from a BOM
            problem = body_problem(json.loads(body.decode("utf-8")), self.max_records)
        except json.JSONDecodeError as exc:
            problem = 400, f"the request body is not JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); " \
                           f"send {_EXAMPLE}"  # fmt: skip
        except UnicodeDecodeError as exc:
            problem = 400, f"the request body is not UTF-8 text ({exc.reason} at byte {exc.start}); send JSON"
        except RecursionError:
            problem = 400, f"the request body nests JSON too deeply to read; send {_EXAMPLE}"
        if problem is not None:
            await self.refuse(scope, receive, send, *problem)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # the body is JSON whatever the client said (curl -d says a form): LitServe parses it by this header
        headers = [(k, v) for k, v in scope.get("headers") or () if k != b"content-type"]
        await self.app({**scope, "headers": [*headers, (b"content-type", b"application/json")]}, replay, send)

    def too_large(self, size: int, more: bool = False) -> str:
        return (f"the request body holds {'over ' if more else ''}{size:,} bytes; this server reads at most "
                f"{self.max_bytes:,} (`mmfuse serve --max_request_mb`): send fewer records per request")  # fmt: skip

    @staticmethod
    async def refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
        await JSONResponse({"detail": message}, status_code=status)(scope, receive, send)


class Refusal(NamedTuple):
    """A request answered with an error: its HTTP status and message."""

    status: int
    message: str


@dataclass
class Job:
    """One request's records (with their ids), or why it is refused."""

    records: list[dict] = field(default_factory=list)
    refusal: Refusal | None = None


class FusionAPI(ls.LitAPI):
    """The LitServe API of an exported model: one :class:`Job` per request, the records of a batch of requests
    predicted together (see the module's docstring).

    Args:
        path: the directory ``mmfuse export`` wrote.
        model_class: :class:`~mmfuse.model.FusionModel` (or a subclass): its ``from_pretrained`` loads ``path`` in
            the worker (passed in, as :func:`~mmfuse.hub.load.load_pretrained` takes it: the hub never imports
            the model module, which imports the hub).
        max_batch_size: requests LitServe collects into one ``predict`` call (1: each request on its own).
        batch_timeout: seconds LitServe waits for a batch to fill.
        rows_per_forward: records per forward pass of :meth:`FusionModel.predict_rows`.
    """

    def __init__(self, path: str | Path, model_class: type, max_batch_size: int = 16, batch_timeout: float = 0.01,
                 rows_per_forward: int = 32) -> None:  # fmt: skip
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.path, self.model_class, self.rows_per_forward = str(path), model_class, rows_per_forward
        self.model: Any = None
        self.names: list[str] = []

    def setup(self, device: str) -> None:
        import signal

        # this runs in LitServe's worker process: Ctrl+C reaches the terminal's whole process group, and the main
        # process stops the workers itself (a worker interrupted on its own prints a traceback from its queue)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.model = self.model_class.from_pretrained(self.path, device=device)
        self.names = list(self.model.pretrained.output_names)

    # LitServe reads the HTTP types from these two signatures: ``request`` and the answer stay unannotated
    # (a parsed JSON body in; a JSON-able dict or a Starlette response out)
    def decode_request(self, request) -> Job:
        records = request.get("records") if isinstance(request, dict) else None
        if not isinstance(records, list):  # the gate lets none through
            return Job(refusal=Refusal(400, f"the request body is not {_EXAMPLE}"))
        if not records:
            return Job()
        try:
            self.model.check_records(records)
        except InputError as exc:  # a record the model refuses, in mmfuse predict's words
            return Job(refusal=Refusal(422, str(exc)))
        # predict_rows numbers records without an id by their place in its list: here, their own request's
        return Job([r if ID in r else {**r, ID: str(i)} for i, r in enumerate(records)])

    def predict(self, jobs: Job | list[Job]) -> list[dict] | Refusal | list[list[dict] | Refusal]:
        """Each job's rows (or its refusal): one ``predict_rows`` call over the records of all of them; should
        that fail on the model's word (non-finite predictions), each job again on its own, so that only the
        requests it concerns are refused."""
        single = isinstance(jobs, Job)
        jobs = [jobs] if single else list(jobs)
        try:
            answers = self.together(jobs)
        except MmfuseError:
            answers = [self.alone(job) for job in jobs]
        return answers[0] if single else answers

    def together(self, jobs: list[Job]) -> list[list[dict] | Refusal]:
        records = [record for job in jobs for record in job.records]
        rows = self.model.predict_rows(records, batch_size=self.rows_per_forward) if records else []
        answers: list[list[dict] | Refusal] = []
        start = 0
        for job in jobs:
            answers.append(job.refusal or rows[start : start + len(job.records)])
            start += len(job.records)
        return answers

    def alone(self, job: Job) -> list[dict] | Refusal:
        try:
            return self.together([job])[0]
        except InputError as exc:
            return Refusal(422, str(exc))
        except MmfuseError as exc:
            return Refusal(500, str(exc))

    def encode_response(self, output):
        if isinstance(output, Refusal):
            return JSONResponse({"detail": output.message}, status_code=output.status)
        return {"predictions": output, "names": self.names}


def exported(path: str | Path) -> tuple[Path, PretrainedConfig]:
    """The local directory of the export ``path`` (a directory, or a hub id downloaded once) and its config,
    checked here so that a wrong ``path`` is one line, not a worker's traceback."""
    directory = resolve_directory(path)
    return directory, read_config(directory)


def metadata(path: Path, config: PretrainedConfig) -> dict[str, Any]:
    """What ``GET /info`` says of the model: where it is, what it reads and what it answers."""
    return {"path": str(path.resolve()), "modalities": list(config.modalities), "limits": config.limits,
            "output_names": list(config.output_names), "kind": config.kind}  # fmt: skip


def check_port_free(host: str, port: int) -> None:
    """A :class:`ConfigError` when something listens on ``host:port`` already."""
    import socket

    try:
        socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as exc:
        raise ConfigError(f"{host}:{port} is taken ({exc.strerror}); give another --port") from None


def serve(
    path: str | Path,
    model_class: type,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 16,
    batch_timeout: float = 0.01,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_records: int = DEFAULT_MAX_RECORDS,
    accelerator: str = "auto",
    workers: int = 1,
    timeout: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serves the exported model in ``path`` until interrupted (see the module's docstring).

    Args:
        path: the directory ``mmfuse export`` wrote (or a hub id holding one, downloaded first).
        model_class: :class:`~mmfuse.model.FusionModel`, whose ``from_pretrained`` loads it in each worker.
        host: ``127.0.0.1`` or ``localhost`` (this machine only), ``0.0.0.0`` or ``::`` (every interface).
        port: 1024 to 65535.
        max_batch_size: requests predicted together (1: no batching across requests).
        batch_timeout: seconds the worker waits for a batch to fill.
        max_request_bytes: the largest request body read (413 past it).
        max_records: the most records per request (413 past it).
        accelerator: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``mps``.
        workers: model copies per device, each a process.
        timeout: seconds a request may wait for its answer (504 past it).
        log_level: uvicorn's and LitServe's (``warning`` for quiet).
    """
    path, config = exported(path)
    host = "127.0.0.1" if host == "localhost" else host
    if host not in HOSTS:
        raise ConfigError(f"--host {host!r}: the server binds {', '.join(HOSTS)} (this machine: 127.0.0.1)")
    if not 1024 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port from 1024 to 65535")
    for name, value, least in [("max_batch_size", max_batch_size, 1), ("max_records", max_records, 1),
                               ("workers", workers, 1), ("max_request_bytes", max_request_bytes, 1)]:  # fmt: skip
        if value < least:
            raise ConfigError(f"--{name} {value}: give at least {least}")
    if batch_timeout < 0:
        raise ConfigError(f"--batch_timeout {batch_timeout}: give 0 or more seconds")
    check_port_free(host, port)
    import torch  # LitServe's `auto` picks a GPU only once torch is imported

    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ConfigError(f"--accelerator {accelerator}: this machine has no CUDA GPU that torch sees; use auto or cpu")
    api = FusionAPI(path, model_class, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    gate = (RequestGate, {"path": api.api_path, "max_bytes": max_request_bytes, "max_records": max_records})
    try:
        server = ls.LitServer(api, accelerator=accelerator, workers_per_device=workers, timeout=timeout,
                              middlewares=[gate], model_metadata=metadata(path, config))  # fmt: skip
    except (ValueError, RuntimeError) as exc:  # LitServe's word on an accelerator this machine lacks
        raise ConfigError(f"--accelerator {accelerator}: {exc}") from exc
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level=log_level)
    except RuntimeError as exc:
        if "workers failed to start" in str(exc):  # the worker's own error is in the log above
            raise MmfuseError(f"the model in {path} did not load (the worker's error is above)") from exc
        raise

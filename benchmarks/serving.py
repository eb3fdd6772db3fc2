"""Requests per second and latency of ``mmfuse serve`` with and without batching across requests.

Starts ``mmfuse serve`` twice on the same exported model, with ``--max_batch_size 1`` (each request on its own)
and ``16`` (requests collected for ``--batch_timeout`` seconds and predicted together), both up at once; then N
concurrent clients (keep-alive connections) send requests of a few records each, alternating the servers run by
run so that drifts of the machine fall on both alike, and the table gives the median over runs with the spread::

    python benchmarks/serving.py                        # the quickstart's tiny model, 8 clients, 5 runs each
    python benchmarks/serving.py --model DIR            # an export of yours (`mmfuse export`)
    python benchmarks/serving.py --clients 32 --records 4 --batch-sizes 1,8,32
    python benchmarks/serving.py --quick                # what tests/test_benchmarks.py runs

Without ``--model`` the quickstart (tiny random-init backbones) is trained two steps and exported first. Every
answer is checked (status 200, one row per record); the table counts the others as errors. Latency is from
sending a request to reading its answer, in the client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "config.yaml"


def export_quickstart(work: Path) -> Path:
    """The quickstart trained two steps on the sample data and exported (each command in its own process)."""
    common = ["--config", str(QUICKSTART), "--data.init_args.sample.size=24", "--data.init_args.split.val_fraction=0.2",
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={work}",
              f"--trainer.logger.init_args.save_dir={work}"]  # fmt: skip
    fit = ["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu"]
    _mmfuse(fit, work)
    checkpoint = next(work.rglob("last.ckpt"))
    _mmfuse(["export", *common, "--ckpt_path", str(checkpoint), "--output", str(work / "export")], work)
    return work / "export"


def _mmfuse(args: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mmfuse", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mmfuse {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mmfuse serve`` in its own process group, stopped with Ctrl+C."""

    def __init__(self, model: Path, batch: int, timeout: float, accelerator: str, log: Path) -> None:
        self.port, self.batch, self.log = _free_port(), batch, log
        command = [sys.executable, "-m", "mmfuse", "serve", str(model), "--port", str(self.port),
                   "--max_batch_size", str(batch), "--batch_timeout", str(timeout), "--accelerator", accelerator,
                   "--log_level", "warning"]  # fmt: skip
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            cwd=log.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip

    def wait_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"no /health from the server in {seconds:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def make_bodies(n: int, records: int, seed: int) -> list[tuple[bytes, int]]:
    """``n`` request bodies of ``records`` records (DNA windows of one length; RNA and protein of many; a
    modality missing now and then), each with its number of records."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(n):
        batch = []
        for _ in range(records):
            record = {"dna": "".join(rng.choices("ACGT", k=128)),
                      "rna": "".join(rng.choices("ACGU", k=rng.randint(30, 90))),
                      "protein": "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(15, 50)))}  # fmt: skip
            if rng.random() < 0.3:
                del record[rng.choice(["rna", "protein"])]
            batch.append(record)
        bodies.append((json.dumps({"records": batch}).encode(), len(batch)))
    return bodies


def load(port: int, bodies: list[tuple[bytes, int]], clients: int) -> tuple[float, list[float], int]:
    """Sends ``bodies`` from ``clients`` threads (one keep-alive connection each): ``(seconds, latencies, errors)``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(share: list[tuple[bytes, int]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, failed = [], 0
        for body, records in share:
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                ok = response.status == 200 and len(json.loads(answer)["predictions"]) == records
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append(time.perf_counter() - start)
            failed += not ok
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, errors[0]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure(servers: list[Server], args: argparse.Namespace) -> list[dict]:
    runs: dict[int, list[dict]] = {s.batch: [] for s in servers}
    warm = make_bodies(2 * args.clients, args.records, seed=-1)
    for server in servers:  # first calls (allocations, lazy imports) are not timed
        load(server.port, warm, args.clients)
    for run in range(args.runs):
        order = servers if run % 2 == 0 else servers[::-1]  # alternating, and which one goes first too
        bodies = make_bodies(args.requests, args.records, seed=run)
        for server in order:
            seconds, latencies, errors = load(server.port, bodies, args.clients)
            runs[server.batch].append({"rps": len(bodies) / seconds, "p50": percentile(latencies, 50),
                                       "p99": percentile(latencies, 99), "errors": errors})  # fmt: skip
    rows = []
    for batch, measured in runs.items():
        rates = [m["rps"] for m in measured]
        rows.append({"max_batch_size": batch, "requests_per_s": statistics.median(rates), "min": min(rates),
                     "max": max(rates), "p50_ms": 1000 * statistics.median(m["p50"] for m in measured),
                     "p99_ms": 1000 * statistics.median(m["p99"] for m in measured),
                     "errors": sum(m["errors"] for m in measured), "runs": len(measured)})  # fmt: skip
    return rows


def print_table(rows: list[dict], args: argparse.Namespace, device: str) -> None:
    base = rows[0]["requests_per_s"]
    print(f"mmfuse serve, {args.clients} clients, {args.requests} requests of {args.records} records per run, "
          f"batch_timeout {args.batch_timeout} s, {device}: median of {args.runs} alternating runs (min-max)")
    first = rows[0]["max_batch_size"]
    print(f"| max_batch_size | requests/s | min-max | p50 ms | p99 ms | errors | vs batch {first} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_batch_size']} | {r['requests_per_s']:,.1f} | {r['min']:,.1f}-{r['max']:,.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['requests_per_s'] / base:.2f}x |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported model directory (default: the quickstart's)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8; quick 4)")
    parser.add_argument("--requests", type=int, help="requests per run and server (default 400; quick 40)")
    parser.add_argument("--records", type=int, default=2, help="records per request (default 2)")
    parser.add_argument("--runs", type=int, help="timed runs per server, alternating (default 5; quick 2)")
    parser.add_argument("--batch-sizes", default="1,16", help="--max_batch_size of each server (default 1,16)")
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="--batch_timeout (default 0.01)")
    parser.add_argument("--accelerator", default="auto", help="--accelerator of the servers (default auto)")
    parser.add_argument("--quick", action="store_true", help="few requests and runs (what the test runs)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    args.clients = args.clients or (4 if args.quick else 8)
    args.requests = args.requests or (40 if args.quick else 400)
    args.runs = args.runs or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="mmfuse-serving-") as work:
        work = Path(work)
        model = args.model or export_quickstart(work)
        servers = [Server(model, int(b), args.batch_timeout, args.accelerator, work / f"server-{b}.log")
                   for b in args.batch_sizes.split(",")]  # fmt: skip
        try:
            for server in servers:
                server.wait_ready()
            rows = measure(servers, args)
        finally:
            for server in servers:
                server.stop()
    import torch

    cuda = args.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    print_table(rows, args, device)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()

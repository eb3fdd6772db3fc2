"""``mmfuse serve`` in its own process on a free local port: bad requests answered 4xx with the model's message
while the server stays up, and concurrent clients answered exactly what ``predict_rows`` gives (batching across
requests changes no answer). ``exported_dir``: tests/hub/conftest.py."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("litserve")

#: the server's limits in these tests: 64 KiB bodies, 32 records per request
MAX_MB, MAX_RECORDS = 1 / 16, 32
CLIENTS, REQUESTS = 8, 50


@pytest.fixture(scope="module")
def served_dir(exported_dir, tmp_path_factory):
    """The export with its protein crop policy set to ``error`` (too long: refused), DNA and RNA cropped."""
    import shutil

    copy = tmp_path_factory.mktemp("served") / "export"
    shutil.copytree(exported_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["max_lengths"]["protein"] == 128 and config["max_lengths"]["rna"] == 256
    config["crop"]["protein"] = "error"
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.fixture(scope="module")
def model(served_dir):
    from mmfuse.model import FusionModel

    return FusionModel.from_pretrained(str(served_dir))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, chunked: bool = False):
    """``(status, parsed JSON or text)`` of one request to the server."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if chunked:
            connection.request(method, path, body=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
                               headers={"Content-Type": "application/json"}, encode_chunked=True)  # fmt: skip
        else:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read().decode()
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, text
    finally:
        connection.close()


def post(port: int, payload, chunked: bool = False):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(port, "POST", "/predict", body, chunked)


@pytest.fixture(scope="module")
def server(served_dir, tmp_path_factory):
    """``(port, log file)`` of ``mmfuse serve`` started for this module; stopped with Ctrl+C (its whole group)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    command = [sys.executable, "-m", "mmfuse", "serve", str(served_dir), "--port", str(port),
               "--max_request_mb", str(MAX_MB), "--max_records", str(MAX_RECORDS), "--max_batch_size", "16",
               "--batch_timeout", "0.01", "--accelerator", "cpu", "--log_level", "warning"]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   cwd=log.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server exited ({process.returncode}):\n{log.read_text()}"
            try:
                if request(port, "GET", "/health") == (200, "ok"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /health in 120 s:\n{log.read_text()}"
            time.sleep(0.2)
    except BaseException:
        _stop(process)
        raise
    yield port, log
    _stop(process)
    # Ctrl+C ends it cleanly: status 0, no worker's traceback
    assert process.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)  # Ctrl+C: LitServe stops its workers itself
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _records(rng: random.Random, n: int) -> list[dict]:
    """``n`` records of random sequences: DNA windows of one length (Enformer sees padding), RNA and protein of
    many lengths, each modality missing now and then (never all), an id on some."""
    records = []
    for i in range(n):
        record = {"dna": "".join(rng.choices("ACGT", k=128)),
                  "rna": "".join(rng.choices("ACGU", k=rng.randint(8, 90))),
                  "protein": "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(5, 50)))}  # fmt: skip
        for modality in rng.sample(sorted(record), rng.randint(0, 2)):
            del record[modality]
        if rng.random() < 0.5:
            record["id"] = f"r{rng.randint(0, 10**6)}-{i}"
        records.append(record)
    return records


def _assert_equal(answer: dict, expected: list[dict], names: list[str]) -> None:
    assert answer["names"] == names
    rows = answer["predictions"]
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert all(set(r) == set(e) for r, e in zip(rows, expected, strict=True))
    worst = max(abs(r[k] - e[k]) for r, e in zip(rows, expected, strict=True) for k in e if k != "id")
    assert worst <= 1e-6, worst


def _refusal(model, records) -> str:
    """The message ``check_records`` (what mmfuse predict prints) gives for ``records``."""
    from mmfuse.errors import InputError

    with pytest.raises(InputError) as info:
        model.check_records(records)
    return str(info.value)


def _assert_up(port: int, model) -> None:
    assert request(port, "GET", "/health") == (200, "ok")
    records = [{"rna": "ACGUACGU"}]
    status, answer = post(port, {"records": records})
    assert status == 200, answer
    _assert_equal(answer, model.predict_rows(records), list(model.pretrained.output_names))


BAD_SHAPES = {
    "malformed JSON": (b'{"records": [{"dna": "ACGT"}', 400, "not JSON"),
    "not UTF-8": (b"\xff\xfe{}", 400, "not UTF-8"),
    "deep but small": (b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "too deeply"),
    "an array": ([{"dna": "ACGT"}], 400, "is an array, not an object"),
    "no records": ({"record": [{"dna": "ACGT"}]}, 400, "has no \"records\" (its keys: 'record')"),
    "records not a list": ({"records": {"dna": "ACGT"}}, 400, '"records" is an object, not a list'),
    "a record not an object": ({"records": [{"dna": "ACGT"}, "ACGT"]}, 400, "records[1] is a string"),
    "too many records": ({"records": [{"dna": "ACGT"}] * (MAX_RECORDS + 1)}, 413, f"at most {MAX_RECORDS}"),
    "oversized body": ({"records": [{"dna": "A" * 70_000}]}, 413, "reads at most 65,536"),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_a_malformed_request_is_a_4xx_with_a_clear_message(server, model, case, chunked):
    port, log = server
    payload, status, words = BAD_SHAPES[case]
    got, answer = post(port, payload, chunked=chunked)
    assert (got, type(answer)) == (status, dict), answer
    assert words in answer["detail"], answer
    _assert_up(port, model)


BAD_RECORDS = {
    "no modality": [{"dna": "ACGTACGT"}, {"id": "empty"}],
    "modalities all null": [{"dna": None, "rna": None}],
    "a number as sequence": [{"dna": 12345}],
    "an unknown modality": [{"dna": "ACGT", "atac": "ACGT"}],
    "invalid letters": [{"protein": "MKV1L"}],
    "too long": [{"rna": "ACGU" * 100, "protein": "M" * 129}],
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_a_record_the_model_refuses_is_a_422_with_mmfuse_predicts_message(server, model, case):
    port, log = server
    records = BAD_RECORDS[case]
    status, answer = post(port, {"records": records})
    assert status == 422, answer
    assert answer == {"detail": _refusal(model, records)}
    _assert_up(port, model)


def test_missing_modalities_cropped_sequences_and_no_records_are_answered(server, model):
    port, _ = server
    names = list(model.pretrained.output_names)
    cropped = [{"dna": "ACGT" * 100, "rna": "ACGU" * 100, "protein": "M" * 128}]  # DNA and RNA over 256: cropped
    for records in ([{"protein": "MKVLA"}], [{"dna": "ACGT" * 32, "rna": None}, {"rna": "ACGU", "id": 7}], cropped):
        status, answer = post(port, {"records": records})
        assert status == 200, answer
        _assert_equal(answer, model.predict_rows(records), names)
    assert post(port, {"records": []}) == (200, {"predictions": [], "names": names})


def test_concurrent_clients_get_what_predict_rows_gives(server, model):
    """8 clients x 50 requests of 1 to 4 records, batched across requests by the server; every 10th request holds
    a record the model refuses: that request alone is refused, the others of its batch are answered."""
    port, log = server
    names = list(model.pretrained.output_names)
    rng = random.Random(0)
    plans = []
    for client in range(CLIENTS):
        for i in range(REQUESTS):
            records = _records(rng, rng.randint(1, 4))
            if i % 10 == 9:
                records[-1] = {"rna": "ACGU", "protein": 3.5}
                plans.append((client, records, (422, {"detail": _refusal(model, records)})))
            else:
                plans.append((client, records, model.predict_rows(records)))

    def run(client: int) -> list[str]:
        problems = []
        for _, records, expected in (p for p in plans if p[0] == client):
            status, answer = post(port, {"records": records})
            if isinstance(expected, tuple):
                if (status, answer) != expected:
                    problems.append(f"expected {expected}, got {status} {answer}")
                continue
            try:
                assert status == 200, (status, answer)
                _assert_equal(answer, expected, names)
            except AssertionError as exc:
                problems.append(str(exc))
        return problems

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        problems = [p for found in pool.map(run, range(CLIENTS)) for p in found]
    elapsed = time.perf_counter() - start
    assert not problems, f"{len(problems)} of {len(plans)} requests: {problems[:3]}"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    print(f"{len(plans)} requests from {CLIENTS} clients in {elapsed:.1f} s")


def test_the_server_never_logged_a_traceback(server, model):
    _, log = server
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("args", "words"),
    [(["/no/such/dir"], "is neither a directory nor a hub id"), (["{tmp}"], "has no config.json"),
     (["{export}", "--host", "example.org"], "--host 'example.org'"), (["{export}", "--port", "80"], "1024 to 65535"),
     (["{export}", "--max_request_mb", "0"], "--max_request_mb 0"),
     (["{export}", "--max_batch_size", "0"], "--max_batch_size 0")],
    ids=["missing", "not-exported", "host", "port", "body-size", "batch-size"],
)  # fmt: skip
def test_a_wrong_command_line_is_one_error_line(exported_dir, tmp_path, capsys, args, words):
    from mmfuse.cli import main

    argv = [a.format(tmp=tmp_path, export=exported_dir) for a in args]
    with pytest.raises(SystemExit) as info:
        main(["serve", *argv])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.startswith("mmfuse: error: ") and words in err and "\n" not in err, err


def test_a_taken_port_is_one_error_line(server, exported_dir, capsys):
    from mmfuse.cli import main

    with pytest.raises(SystemExit):
        main(["serve", str(exported_dir), "--port", str(server[0])])
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmfuse: error: ") and f"127.0.0.1:{server[0]} is taken" in err, err

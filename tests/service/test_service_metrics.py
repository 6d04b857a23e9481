"""What a Prometheus user and a log reader expect: fine cost buckets, model info, collectors, request ids."""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import ValidationError
from servicetools import encode, picture, serve, settings_for, start

from benchmarks.harness import free_port
from converter import load
from service import workers
from service.logs import HEADER, JsonFormatter, RequestIdFilter, accept_request_id
from service.metrics import ADDITIONS, ENERGY_J, SPIKES, Metrics
from service.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def fresh(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of this module's own, so its metrics hold only this module's requests."""
    async with serve(settings_for(model_dir)) as client:
        yield client


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at INFO, its records stamped with the request id as the service's log handler stamps them."""
    caplog.set_level(logging.INFO)
    stamp = RequestIdFilter()
    caplog.handler.addFilter(stamp)
    yield caplog
    caplog.handler.removeFilter(stamp)


def samples(text: str, name: str) -> list[Sample]:
    """Every sample called ``name`` in a Prometheus exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def upload(data: bytes) -> dict:
    """A multipart upload of one PNG."""
    return {"file": ("image.png", data, "image/png")}


def flat(value: int) -> bytes:
    """A PNG of one grey level."""
    return encode(picture().point(lambda _: value))


@pytest.mark.parametrize("bounds", [SPIKES, ADDITIONS, tuple(round(b * 1e12, 6) for b in ENERGY_J)])  # pJ
def test_cost_buckets_are_ten_a_decade_over_every_models_range(bounds: tuple[float, ...]) -> None:
    assert list(bounds) == sorted(set(bounds))
    assert max(b / a for a, b in itertools.pairwise(bounds)) < 1.3  # 10 a decade: 1.25 or 1.28
    assert bounds[0] <= 100 and bounds[-1] >= 1e9  # a tiny test model to a VGG-16 (the ranges)
    assert {1e3, 2e3, 5e3, 1e6, 2e6, 5e6} <= set(bounds)  # 1-2-5 is a subset: coarser views stay exact


async def test_a_models_images_spread_over_several_cost_buckets(fresh: httpx.AsyncClient) -> None:
    energies = []
    for image in (flat(0), flat(255), encode(picture()), flat(128)):
        body = (await fresh.post("/classify?engine=fast", files=upload(image))).json()
        energies.append(body["operations"]["energy"]["snn_pj"])
    text = (await fresh.get("/metrics")).text
    labels = {"model": "tiny", "engine": "fast"}
    for histogram in (
        "tsc_spikes_per_image",
        "tsc_synaptic_additions_per_image",
        "tsc_energy_per_image_joules",
    ):
        cumulative = [
            s.value for s in samples(text, f"{histogram}_bucket") if labels.items() <= s.labels.items()
        ]
        filled = sum(b > a for a, b in itertools.pairwise([0.0, *cumulative]))
        assert cumulative[-1] == 4 and filled >= 2, histogram
    (total,) = [s.value for s in samples(text, "tsc_energy_per_image_joules_sum") if s.labels == labels]
    assert math.isclose(total, sum(energies) * 1e-12, rel_tol=1e-9)  # the answers' pJ, in joules


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed"
)
async def test_promtool_finds_nothing_to_lint(fresh: httpx.AsyncClient) -> None:
    """Prometheus's own linter: base units (joules, seconds), _total counters, help on every metric."""
    await fresh.post("/classify", files=upload(flat(64)))  # every family has samples
    text = (await fresh.get("/metrics")).text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_the_model_info_metric_names_every_loaded_model(fresh: httpx.AsyncClient) -> None:
    detail = (await fresh.get("/models/tiny")).json()["manifest"]
    info = {
        s.labels["model"]: s.labels for s in samples((await fresh.get("/metrics")).text, "tsc_model_info")
    }
    assert set(info) == {"tiny", "tiny-gray"}
    assert info["tiny"] == {
        "model": "tiny",
        "name": "tiny",
        "version": detail["version"],
        "T": "4",
        "windows": "4",  # uniform windows: T alone; otherwise every layer's, in order, comma-separated
        "timesteps": str(detail["latency_steps"]),
        "precision": "float32",  # the default: the fast engine gives float64's answers in it
    }


def test_the_model_info_names_every_window_when_they_differ(model_dir: Path) -> None:
    metrics, net = Metrics(), load(model_dir / "tiny").to(torch.float32)
    metrics.model_loaded("tiny", net.with_windows({**net.windows, next(iter(net.windows)): 2}), loaded=1)
    (sample,) = samples(metrics.render().decode(), "tsc_model_info")
    assert sample.labels["windows"] == ",".join(["2"] + ["4"] * (len(net.windows) - 1))
    assert sample.labels["precision"] == "float32"


async def test_process_and_python_collectors_and_no_created_series(fresh: httpx.AsyncClient) -> None:
    text = (await fresh.get("/metrics")).text
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_info",
        "python_gc_objects_collected_total",
    ):
        assert samples(text, name), name
    assert "_created" not in text


async def test_head_metrics_answers_the_headers_without_a_body(fresh: httpx.AsyncClient) -> None:
    response = await fresh.head("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert int(response.headers["content-length"]) > 0 and response.content == b""
    assert {"get", "head"} <= set(
        (await fresh.get("/openapi.json")).json()["paths"]["/metrics"]
    )  # Allow: GET, HEAD


@pytest.mark.parametrize(
    "given",
    ["abc-123", "x" * 128, "0af7651916cd43dd8448eb211c80319c", "Root=1-5759e988-bd862e3fe1be46a9;Sampled=1"],
)
def test_a_valid_request_id_is_kept(given: str) -> None:
    assert accept_request_id(given) == given


@pytest.mark.parametrize(
    "given",
    [None, "", "x" * 129, "tab\there", "caf\xe9", "del\x7f", "with space", "-]: GET /admin 200", "a[b]"],
)
def test_a_missing_or_invalid_request_id_is_replaced(given: str | None) -> None:
    made = accept_request_id(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0


async def test_the_request_id_is_echoed_on_every_response(fresh: httpx.AsyncClient) -> None:
    given = await fresh.get("/livez", headers={HEADER: "trace-42"})
    assert given.headers[HEADER] == "trace-42"
    made = [(await fresh.get("/livez")).headers[HEADER] for _ in range(2)]
    assert made[0] != made[1] and all(len(m) == 32 for m in made)
    replaced = await fresh.get("/livez", headers={HEADER: b"caf\xe9"})
    assert len(replaced.headers[HEADER]) == 32
    for response in (
        await fresh.get("/no/such/route", headers={HEADER: "e-404"}),
        await fresh.post("/classify", files=upload(b"junk"), headers={HEADER: "e-400"}),
        await fresh.get("/models/nope", headers={HEADER: "e-404"}),
    ):
        assert response.status_code >= 400 and response.headers[HEADER].startswith("e-")


async def test_a_500_carries_the_id_in_its_header_and_its_log_records(
    fresh: httpx.AsyncClient, captured: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(workers, "run_batch", explode)  # the engines run in a thread in these tests
    response = await fresh.post("/classify", files=upload(flat(9)), headers={HEADER: "fails-1"})
    assert response.status_code == 500 and response.headers[HEADER] == "fails-1"
    unhandled = [r for r in captured.records if r.name == "service.errors"]
    assert unhandled and all(r.request_id == "fails-1" for r in unhandled)
    (access,) = [r for r in captured.records if r.name == "service.access"]
    assert (access.request_id, access.status, access.route) == ("fails-1", 500, "/classify")


async def test_access_records_hold_the_route_template_and_the_request_id(
    fresh: httpx.AsyncClient, captured: pytest.LogCaptureFixture
) -> None:
    await fresh.get("/models/tiny", headers={HEADER: "look-7"})
    (access,) = [r for r in captured.records if r.name == "service.access"]
    assert access.request_id == "look-7"
    assert (access.method, access.route, access.status) == ("GET", "/models/{name}", 200)
    assert access.getMessage().startswith("GET /models/{name} 200 ")
    outside = logging.makeLogRecord({"msg": "not while handling a request"})
    assert RequestIdFilter().filter(outside) and outside.request_id == "-"


async def test_json_access_lines_parse_and_hold_the_fields(fresh: httpx.AsyncClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        await fresh.get("/models/tiny-gray", headers={HEADER: "json-1"})
        await fresh.get("/nowhere/12345")
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    found, unmatched = (json.loads(line) for line in stream.getvalue().splitlines())
    assert found["request_id"] == "json-1" and found["logger"] == "service.access"
    assert (found["method"], found["route"], found["status"]) == ("GET", "/models/{name}", 200)
    assert found["duration_ms"] >= 0 and found["client"] == "127.0.0.1:123"
    assert found["level"] == "INFO" and found["time"].endswith("+00:00")
    assert (unmatched["route"], unmatched["status"]) == ("unmatched", 404) and "12345" not in str(unmatched)


def test_tsc_log_format_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TSC_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("TSC_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("TSC_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_the_server_writes_json_lines_with_request_ids(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"TSC_PORT": str(port), "TSC_MODEL_DIR": str(model_dir), "TSC_LOG_FORMAT": "json"}
    server = start([sys.executable, "-m", "service"], env, tmp_path / "server.log", port)
    try:
        response = httpx.get(f"{server.url}/models/tiny", headers={HEADER: "wire-1"})
        assert response.headers[HEADER] == "wire-1"
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    (access,) = [line for line in lines if line.get("request_id") == "wire-1"]
    assert (access["logger"], access["route"], access["status"]) == ("service.access", "/models/{name}", 200)
    assert access["client"].startswith("127.0.0.1:")
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own lines: JSON too
    assert not any(line["logger"] == "uvicorn.access" for line in lines)


async def test_probes_may_send_head_and_every_operation_has_its_own_id(fresh: httpx.AsyncClient) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        response = await fresh.head(path)
        assert response.status_code == 200 and response.content == b"", path
    paths = (await fresh.get("/openapi.json")).json()["paths"]
    ids = [op["operationId"] for methods in paths.values() for op in methods.values()]
    assert len(ids) == len(set(ids))  # client generators need one id per operation


async def test_405_lists_every_method_of_the_path(fresh: httpx.AsyncClient) -> None:
    """GET and HEAD of one path are separate routes (one operation id each); Allow names both."""
    for path in ("/livez", "/readyz", "/metrics"):
        response = await fresh.request("OPTIONS", path)
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD", path
    assert (await fresh.delete("/classify")).headers["allow"] == "POST"

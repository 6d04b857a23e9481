"""The HTTP API in-process: responses, options, models, health, metrics, OpenAPI."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
import torch
from servicetools import LABELS, encode, picture, serve, settings_for

from converter.snn.energy import E_ADD_PJ, E_MAC_PJ
from service.execute import RASTER_NEURONS_PER_LAYER

pytestmark = pytest.mark.anyio


def upload(data: bytes, name: str = "cat.png", content_type: str = "image/png") -> dict:
    return {"file": (name, data, content_type)}


async def test_classify_reports_answer_latency_spikes_and_operations(
    client: httpx.AsyncClient, png: bytes
) -> None:
    response = await client.post("/classify", files=upload(png))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "cat.png"
    assert body["model"] == {"name": "tiny", "version": "1", "T": 4, "engine": "fast"}
    predictions = body["predictions"]
    assert len(predictions) == 5
    assert [p["probability"] for p in predictions] == sorted(
        (p["probability"] for p in predictions), reverse=True
    )
    assert all(p["label"] == LABELS[p["index"]] for p in predictions)
    latency = body["latency"]
    assert latency["timesteps"] > 0 and latency["timesteps"] % 4 == 0
    assert latency["server_ms"] >= latency["queue_ms"] >= 0
    assert latency["batch_size"] >= 1
    spikes = body["spikes"]
    assert spikes["total"] == sum(layer["spikes"] for layer in spikes["layers"]) > 0
    assert {layer["kind"] for layer in spikes["layers"]} >= {"input", "neuron", "output"}
    ops = body["operations"]
    assert ops["synaptic_additions"] == sum(layer["synaptic_additions"] for layer in spikes["layers"])
    assert ops["memory_accesses"] == ops["synaptic_additions"]
    assert ops["ann_macs"] > 0
    energy = ops["energy"]
    assert math.isclose(energy["snn_pj"], (ops["synaptic_additions"] + ops["neuron_updates"]) * E_ADD_PJ)
    assert math.isclose(energy["ann_pj"], ops["ann_macs"] * E_MAC_PJ)
    assert math.isclose(energy["ann_over_snn"], energy["ann_pj"] / energy["snn_pj"])
    assert "Horowitz" in energy["source"]
    assert body["comparison"] is None


async def test_options_from_query_and_form(client: httpx.AsyncClient, png: bytes) -> None:
    response = await client.post("/classify?top_k=3&engine=fast", data={"top_k": "2"}, files=upload(png))
    assert len(response.json()["predictions"]) == 2  # the form wins
    response = await client.post("/classify", params={"top_k": 50}, files=upload(png))
    assert len(response.json()["predictions"]) == len(LABELS)  # capped at the class count


async def test_stepped_engine_gives_the_same_answer(client: httpx.AsyncClient, png: bytes) -> None:
    fast = (await client.post("/classify", files=upload(png))).json()
    stepped = (await client.post("/classify?engine=stepped", files=upload(png))).json()
    assert stepped["model"]["engine"] == "stepped"
    assert stepped["predictions"][0]["index"] == fast["predictions"][0]["index"]
    assert stepped["latency"]["timesteps"] == fast["latency"]["timesteps"]
    assert stepped["spikes"] == fast["spikes"] and stepped["operations"] == fast["operations"]
    assert [p["probability"] for p in stepped["predictions"]] == pytest.approx(
        [p["probability"] for p in fast["predictions"]], abs=1e-9
    )


async def test_the_default_float32_fast_engine_answers_what_float64_serves(
    client: httpx.AsyncClient, model_dir: Path, png: bytes
) -> None:
    guarded = (await client.post("/classify?raster=true", files=upload(png))).json()  # fast, float32
    async with serve(settings_for(model_dir, precision="float64")) as float64:
        reference = (await float64.post("/classify", files=upload(png))).json()
    assert guarded["model"]["engine"] == "fast" and guarded["raster"]
    assert guarded["predictions"] == reference["predictions"]  # float64's logits, so its probabilities
    assert guarded["spikes"] == reference["spikes"] and guarded["operations"] == reference["operations"]


async def test_models_are_served_in_float32_by_default(client: httpx.AsyncClient) -> None:
    models = client._transport.app.state.dataplane.store.models  # type: ignore[attr-defined]
    assert {served.net.dtype for served in models.values()} == {torch.float32}


async def test_compare_adds_ann_and_rate_figures(client: httpx.AsyncClient, png: bytes) -> None:
    body = (await client.post("/classify?compare=true&top_k=1", files=upload(png))).json()
    ann, rate = body["comparison"]["ann"], body["comparison"]["rate"]
    assert ann["macs"] == body["operations"]["ann_macs"]
    assert math.isclose(ann["energy_pj"], ann["macs"] * E_MAC_PJ)
    assert ann["agrees"] == (ann["predictions"][0]["index"] == body["predictions"][0]["index"])
    assert rate["timesteps"] == 8  # TSC_RATE_STEPS of the test settings
    assert rate["spikes"] > 0 and len(rate["predictions"]) == 1


async def test_raster_is_bounded_and_each_on_spike_is_inside_its_window(
    client: httpx.AsyncClient, png: bytes
) -> None:
    assert (await client.post("/classify", files=upload(png))).json()["raster"] is None
    windows = (await client.get("/models/tiny")).json()["windows"]
    body = (await client.post("/classify?raster=true", files=upload(png))).json()
    neurons = {layer["name"]: layer["neurons"] for layer in body["spikes"]["layers"]}
    raster = body["raster"]
    assert [layer["name"] for layer in raster] == list(windows)  # the input, then every neuron layer
    for layer in raster:
        assert layer["end"] - layer["start"] == windows[layer["name"]] and layer["off"] == layer["end"]
        assert (
            len(layer["neurons"]) == len(layer["on"]) == min(RASTER_NEURONS_PER_LAYER, neurons[layer["name"]])
        )
        assert (
            layer["neurons"] == sorted(set(layer["neurons"]))
            and layer["neurons"][-1] < neurons[layer["name"]]
        )
        assert all(on is None or layer["start"] <= on < layer["end"] for on in layer["on"])
    assert any(on is not None for layer in raster for on in layer["on"])
    assert max(layer["end"] for layer in raster) <= body["latency"]["timesteps"]
    stepped = (
        await client.post("/classify?engine=stepped", data={"raster": "true"}, files=upload(png))
    ).json()
    assert stepped["raster"] == raster  # the same sample, and the reference engine's spikes agree
    batch = await client.post(
        "/classify/batch?raster=true&compare=true", files=[("files", ("a.png", png))] * 2
    )
    assert [r["raster"] for r in batch.json()["results"]] == [raster, raster]


async def test_greyscale_model_takes_colour_uploads(client: httpx.AsyncClient) -> None:
    response = await client.post("/classify?model=tiny-gray", files=upload(encode(picture("CMYK"), "JPEG")))
    assert response.status_code == 200, response.text
    assert response.json()["model"]["name"] == "tiny-gray"


async def test_batch_returns_one_result_per_file_in_order(client: httpx.AsyncClient) -> None:
    formats = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
    names = [f"{i}.{fmt.lower()}" for i, fmt in enumerate(formats)]
    files = [
        ("files", (name, encode(picture(size=(30 + i, 40)), fmt)))
        for i, (name, fmt) in enumerate(zip(names, formats, strict=True))
    ]
    response = await client.post("/classify/batch?top_k=1", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == names
    assert all(len(r["predictions"]) == 1 for r in results)


async def test_batch_answers_match_single_answers(client: httpx.AsyncClient) -> None:
    images = [encode(picture(size=(32 + i, 32))) for i in range(3)]
    batch = (
        await client.post("/classify/batch", files=[("files", (f"{i}.png", d)) for i, d in enumerate(images)])
    ).json()
    for data, result in zip(images, batch["results"], strict=True):
        single = (await client.post("/classify", files=upload(data))).json()
        assert single["predictions"][0]["index"] == result["predictions"][0]["index"]
        assert single["spikes"]["total"] == result["spikes"]["total"]


async def test_models_list_and_detail(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/models")).json()
    assert listing["default_model"] == "tiny"
    assert {m["name"]: m["input"] for m in listing["models"]} == {
        "tiny": {"channels": 3, "height": 32, "width": 32},
        "tiny-gray": {"channels": 1, "height": 28, "width": 28},
    }
    assert listing["failed"] == {}
    detail = (await client.get("/models/tiny")).json()
    assert detail["labels"] == LABELS
    assert detail["default"] is True
    manifest = detail["manifest"]
    assert (
        manifest["T"] == 4
        and "provenance" in manifest
        and "accuracy" in manifest
        and "calibration" in manifest
    )


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).json() == {"status": "alive"}
    ready = (await client.get("/readyz")).json()
    assert ready == {"status": "ready", "default_model": "tiny", "models": ["tiny", "tiny-gray"]}
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2")).json()["name"] == "tsc-snn"


async def test_open_inference_protocol_model_routes(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/tiny")).json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("pixels", "FP32", [-1, 3, 32, 32]),
        ("image", "BYTES", [-1]),
    ]
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 10]}
    assert (await client.get("/v2/models/tiny/ready")).json() == {"name": "tiny", "ready": True}
    assert (await client.get("/v2/models/nope/ready")).status_code == 404


async def test_metrics_expose_requests_batches_and_spikes(client: httpx.AsyncClient, png: bytes) -> None:
    await client.post("/classify", files=upload(png))
    await client.post("/classify", files=upload(b"junk"))
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'tsc_http_requests_total{method="POST",route="/classify",status="200"}',
        'tsc_http_requests_total{method="POST",route="/classify",status="400"}',
        'tsc_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/classify"}',
        "tsc_http_requests_in_flight 1.0",
        'tsc_queue_duration_seconds_count{model="tiny"}',
        'tsc_inference_duration_seconds_count{engine="fast",model="tiny"}',
        'tsc_batch_size_bucket{engine="fast",le="1.0",model="tiny"}',
        'tsc_spikes_per_image_count{engine="fast",model="tiny"}',
        'tsc_synaptic_additions_per_image_count{engine="fast",model="tiny"}',
        'tsc_energy_per_image_joules_count{engine="fast",model="tiny"}',
        "tsc_models_loaded 2.0",
    ):
        assert line in text, line


async def test_unknown_paths_are_not_counted_by_raw_path(client: httpx.AsyncClient) -> None:
    await client.get("/no/such/path/12345")
    assert "12345" not in (await client.get("/metrics")).text


async def test_openapi_documents_the_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/classify",
        "/classify/batch",
        "/models",
        "/models/{name}",
        "/livez",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"]
    classify = spec["paths"]["/classify"]["post"]
    assert classify["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "Classification"
    )
    assert {"400", "401", "404", "413", "415", "422", "503"} <= set(classify["responses"])
    assert {p["name"] for p in classify["parameters"]} == {"model", "top_k", "engine", "compare", "raster"}
    assert "securitySchemes" not in spec["components"]  # no TSC_API_KEY, no auth to declare
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()

"""The model repository API (index, load, unload while serving), versions side by side, and per-model
settings files."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import torch
from servicetools import LABELS, encode, picture, serve, settings_for, tiny_cnn

from converter import convert

pytestmark = pytest.mark.anyio
PIXELS = {"inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}


def _checkpoint(path: Path, version: str) -> None:
    """A tiny RGB checkpoint of ``version`` at ``path``."""
    net = convert(tiny_cnn(3), torch.rand(16, 3, 32, 32), T=4, name="tiny", version=version, labels=LABELS)
    net.save(path)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints of versions 1, 2 and 10 (10 is the latest: versions order as numbers)."""
    root = tmp_path_factory.mktemp("versions")
    for version in ("1", "2", "10"):
        _checkpoint(root / version, version)
    return root


@pytest.fixture
async def repository(tmp_path: Path, model_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """A client of an app serving a model directory of its own (``tiny`` only, at first)."""
    shutil.copytree(model_dir / "tiny", tmp_path / "tiny")
    async with serve(settings_for(tmp_path)) as client:
        yield client, tmp_path


def _upload() -> dict:
    return {"file": ("a.png", encode(picture()))}


async def _index(client: httpx.AsyncClient, **body: object) -> list[dict]:
    response = await client.post("/v2/repository/index", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_checkpoint_copied_in_is_listed_loaded_served_and_unloaded(
    repository: tuple[httpx.AsyncClient, Path], model_dir: Path
) -> None:
    client, root = repository
    assert await _index(client) == [{"name": "tiny", "version": "1", "state": "READY"}]
    shutil.copytree(model_dir / "tiny-gray", root / "gray")
    assert {"name": "gray", "state": "UNAVAILABLE", "reason": "not loaded"} in await _index(client)
    assert (await client.post("/classify?model=gray", files=_upload())).status_code == 404
    loaded = await client.post("/v2/repository/models/gray/load")
    assert loaded.status_code == 200 and loaded.json() == {"name": "gray", "load": True}
    answer = await client.post("/classify?model=gray", files=_upload())
    assert answer.status_code == 200 and answer.json()["model"]["name"] == "gray"
    assert await _index(client, ready=True) == [
        {"name": "gray", "version": "1", "state": "READY"},
        {"name": "tiny", "version": "1", "state": "READY"},
    ]
    gone = await client.post("/v2/repository/models/gray/unload")
    assert gone.status_code == 200 and gone.json() == {"name": "gray", "unload": True}
    assert (await client.post("/classify?model=gray", files=_upload())).status_code == 404
    assert (await client.post("/classify", files=_upload())).status_code == 200  # tiny, undisturbed
    metrics = (await client.get("/metrics")).text
    assert 'tsc_model_info{model="gray"' not in metrics and "tsc_models_loaded 1.0" in metrics


async def test_unknown_names_and_failed_loads_disturb_nothing(
    repository: tuple[httpx.AsyncClient, Path],
) -> None:
    client, root = repository
    missing = await client.post("/v2/repository/models/nothing/load")
    assert missing.status_code == 404 and "no model 'nothing'" in missing.json()["error"]
    assert (await client.post("/v2/repository/models/nothing/unload")).status_code == 404
    (root / "tiny" / "settings.json").write_text('{"max_batch_size": "many"}')
    failed = await client.post("/v2/repository/models/tiny/load")
    assert failed.status_code == 400, failed.text
    assert "settings.json: max_batch_size" in failed.json()["error"]
    assert (await client.post("/classify?model=tiny", files=_upload())).status_code == 200  # the old one
    entries = await _index(client)
    assert entries[0] == {"name": "tiny", "version": "1", "state": "READY"}
    assert entries[1]["state"] == "UNAVAILABLE" and "max_batch_size" in entries[1]["reason"]
    (root / "tiny" / "settings.json").unlink()
    assert (await client.post("/v2/repository/models/tiny/load")).status_code == 200
    assert await _index(client) == [{"name": "tiny", "version": "1", "state": "READY"}]


async def test_versions_are_served_side_by_side(tmp_path: Path, versions: Path) -> None:
    shutil.copytree(versions, tmp_path / "multi")
    async with serve(settings_for(tmp_path, default_model="multi")) as client:
        metadata = (await client.get("/v2/models/multi")).json()
        assert metadata["versions"] == ["1", "10", "2"]
        detail = (await client.get("/models/multi")).json()
        assert detail["version"] == "10" and detail["versions"] == ["1", "10", "2"]
        answer = await client.post("/classify", files=_upload())
        assert answer.json()["model"]["version"] == "10"  # the latest, as a number
        for version in ("1", "2", "10"):
            infer = await client.post(f"/v2/models/multi/versions/{version}/infer", json=PIXELS)
            assert infer.status_code == 200 and infer.json()["model_version"] == version
        wrong = await client.get("/v2/models/multi/versions/3")
        assert wrong.status_code == 404 and "it serves 1, 10, 2" in wrong.json()["error"]


async def test_one_version_twice_fails_the_model(tmp_path: Path, versions: Path) -> None:
    shutil.copytree(versions / "1", tmp_path / "twice" / "a")
    shutil.copytree(versions / "1", tmp_path / "twice" / "b")
    shutil.copytree(versions / "2", tmp_path / "fine")
    async with serve(settings_for(tmp_path, default_model="fine")) as client:
        models = (await client.get("/models")).json()
        assert [m["name"] for m in models["models"]] == ["fine"]
        assert "version '1' is already served" in models["failed"]["twice"]


async def test_a_models_settings_file_sets_its_batching_engines_and_compare(
    tmp_path: Path, model_dir: Path
) -> None:
    shutil.copytree(model_dir / "tiny", tmp_path / "tiny")
    own = {"max_batch_size": 2, "max_batch_delay_ms": 0, "engines": ["fast", "stepped"], "compare": True}
    (tmp_path / "tiny" / "settings.json").write_text(json.dumps(own))
    async with serve(settings_for(tmp_path)) as client:
        assert (await client.get("/models/tiny")).json()["settings"] == own
        answer = (await client.post("/classify", files=_upload())).json()
        assert answer["comparison"] is not None  # compare by default
        plain = (await client.post("/classify?compare=false", files=_upload())).json()
        assert plain["comparison"] is None
        refused = await client.post("/classify?engine=raw", files=_upload())
        assert refused.status_code == 400 and refused.json()["error"] == "engine_not_allowed"
        assert "only fast, stepped" in refused.json()["detail"]
        batch = await client.post("/classify/batch", files=[("files", ("a.png", encode(picture())))] * 5)
        assert {r["latency"]["batch_size"] for r in batch.json()["results"]} <= {1, 2}
        v2 = {
            "inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]
        }
        outputs = (await client.post("/v2/models/tiny/infer", json=v2)).json()["outputs"]
        assert any(o["name"].startswith("rate_") for o in outputs)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"engines": ["warp"]}', "unknown engines ['warp']"),
        ('{"engines": ["ann"]}', "at least one TSC engine"),
        ('{"batch": 3}', "Extra inputs are not permitted"),
        ("{", "not valid JSON"),
        ('{"max_batch_size": 100000}', "less than or equal to 1024"),
    ],
)
async def test_an_invalid_settings_file_fails_its_model_with_the_reason(
    tmp_path: Path, model_dir: Path, content: str, problem: str
) -> None:
    shutil.copytree(model_dir / "tiny", tmp_path / "tiny")
    shutil.copytree(model_dir / "tiny-gray", tmp_path / "gray")
    (tmp_path / "tiny" / "settings.json").write_text(content)
    async with serve(settings_for(tmp_path, default_model="gray")) as client:
        failed = (await client.get("/models")).json()["failed"]
        assert problem in failed["tiny"] and failed["tiny"].startswith("settings.json: ")


async def test_the_repository_needs_the_key(tmp_path: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir / "tiny", tmp_path / "tiny")
    async with serve(settings_for(tmp_path, api_key="sesame")) as client:
        assert (await client.post("/v2/repository/index")).status_code == 401
        assert (await client.post("/v2/repository/models/tiny/unload")).status_code == 401
        keyed = await client.post("/v2/repository/index", headers={"X-API-Key": "sesame"})
        assert keyed.status_code == 200

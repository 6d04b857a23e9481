"""Ray Serve (deploy/ray): two replicas behind Serve's HTTP proxy answer exactly as the plain service does."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import torch
import yaml
from PIL import Image
from ray.serve.schema import ServeDeploySchema
from servicetools import LABELS, REPO, encode, picture, settings_for, tiny_cnn
from servicetools import serve as serve_in_process

from benchmarks.harness import free_port
from converter import convert
from deploy.ray import app as ray_app
from deploy.ray.app import REPLICA_HEADER, Classifier
from deploy.ray.local import deploy, local_cluster, running_replicas
from service.settings import Settings

pytestmark = pytest.mark.ray
CONFIG = REPO / "deploy" / "ray" / "serve_config.yaml"
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-binary-lossless.tar.gz"
TIMING = ("server_ms", "queue_ms", "inference_ms", "batch_size")  # what load and timing change
Upload = tuple[str, bytes]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test settings (servicetools) serving ``tiny``, converted here (RGB 32x32, T=4)."""
    root = tmp_path_factory.mktemp("models")
    convert(tiny_cnn(3), torch.rand(32, 3, 32, 32), T=4, name="tiny", labels=LABELS).save(root / "tiny")
    return settings_for(root)


@pytest.fixture(scope="module")
def uploads() -> list[Upload]:
    """PNGs made with Pillow in several modes and sizes, and four CIFAR-10 test images when it is here."""
    pictures = [picture(), picture("L", (32, 32)), picture("RGBA", (64, 50)), picture("P", (20, 90))]
    if ARCHIVE.is_file():
        from converter.training.datasets import open_dataset

        cifar = open_dataset(f"cifar10:{ARCHIVE}", "test")
        pictures += [Image.fromarray(cifar.images[i].permute(1, 2, 0).numpy(), "RGB") for i in range(4)]
    return [(f"image{i}.png", encode(image)) for i, image in enumerate(pictures)]


@pytest.fixture(scope="module")
def plain(settings: Settings, uploads: list[Upload]) -> list[dict[str, Any]]:
    """The plain service's answers (the same app in-process), one request at a time."""

    async def answers() -> list[dict[str, Any]]:
        """Classify every upload in turn."""
        async with serve_in_process(settings) as client:
            return [(await classify(client, upload)).json() for upload in uploads]

    return asyncio.run(answers())


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[str]:
    """A local Ray cluster (2 CPUs) serving the app with 2 replicas; Serve's proxy URL. Shut down after."""
    with local_cluster(free_port) as url:
        deploy(settings, replicas=2, cpus_per_replica=0.5)
        yield url


async def classify(client: httpx.AsyncClient, upload: Upload) -> httpx.Response:
    """POST /classify of ``upload`` with every class ranked."""
    files = {"file": (*upload, "image/png")}
    response = await client.post("/classify", params={"top_k": len(LABELS)}, files=files)
    assert response.status_code == 200, response.text
    return response


def steady(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without its timing fields (and batch size): what must not depend on who served it."""
    return answer | {"latency": {k: v for k, v in answer["latency"].items() if k not in TIMING}}


def test_config_names_the_app() -> None:
    """serve_config.yaml is a valid Serve config whose import path is the bound app of this deployment."""
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = config.applications
    (deployment,) = app.deployments
    module, name = app.import_path.split(":")
    assert getattr(importlib.import_module(module), name) is ray_app.app
    assert deployment.name == Classifier.name and deployment.autoscaling_config["initial_replicas"] == 2


def test_replicas_answer_as_the_plain_service(
    cluster: str, uploads: list[Upload], plain: list[dict[str, Any]]
) -> None:
    """One at a time, Serve's answers equal the plain service's but for timing; both replicas serve."""
    assert running_replicas() == 2
    replicas: set[str] = set()

    async def through_serve() -> list[httpx.Response]:
        """Classify every upload in turn through Serve's proxy."""
        async with httpx.AsyncClient(base_url=cluster, timeout=60) as client:
            return [await classify(client, upload) for upload in uploads]

    for response, expected in zip(asyncio.run(through_serve()), plain, strict=True):
        answer = response.json()
        assert answer["latency"]["batch_size"] == expected["latency"]["batch_size"] == 1
        assert steady(answer) == steady(expected)
        replicas.add(response.headers[REPLICA_HEADER])

    # concurrent requests spread over the replicas; batched with others, only the last bits may move
    def post(upload: Upload) -> httpx.Response:
        """POST /classify of ``upload`` through Serve's proxy."""
        return httpx.post(f"{cluster}/classify", files={"file": (*upload, "image/png")}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            responses = list(pool.map(post, uploads * 2))
            assert all(r.status_code == 200 for r in responses)
            replicas |= {r.headers[REPLICA_HEADER] for r in responses}
            if len(replicas) == 2:
                break
    for response, expected in zip(responses, plain * 2, strict=True):
        answer = response.json()
        top, expected_top = answer["predictions"][0], expected["predictions"][0]
        assert top["index"] == expected_top["index"]
        assert top["probability"] == pytest.approx(expected_top["probability"], rel=1e-9)
        assert answer["spikes"] == expected["spikes"] and answer["operations"] == expected["operations"]
    assert len(replicas) == 2, f"one replica served every request: {replicas}"

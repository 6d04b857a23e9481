"""gRPC v2: tritonclient.grpc against a real ``python -m service`` (answers equal to /classify's), and the
service in-process for the key, the limits, ``contents`` beside ``raw_input_contents`` and each refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_tools import protoc
from servicetools import Server, encode, picture, serve, settings_for, start_service
from tritonclient.utils import InferenceServerException
from v2tools import check_outputs, classify, pixels_of

from benchmarks.harness import free_port
from service.grpc_codec import DESCRIPTORS, PROTO, SERVICE, SERVICE_NAME, message_class
from service.grpc_server import _client
from service.tensors import OUTPUTS

SNN_OUTPUTS = [name for name, output in OUTPUTS.items() if output.engine is None]
KEY = "grpc-test-key"
PNG, JPEG = encode(picture()), encode(picture(size=(64, 80)), "JPEG")
PROTO_DIR = Path(__file__).resolve().parents[2] / "service" / "proto"


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """``python -m service`` serving the tiny models, gRPC on a free port: the server and that address."""
    port = free_port()
    env = {"TSC_GRPC_PORT": str(port), "TSC_RATE_STEPS": "8", "TSC_TORCH_THREADS": "1"}
    server = start_service(model_dir, tmp_path_factory.mktemp("log") / "server.log", **env)
    yield server, f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def client(server: tuple[Server, str]) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's gRPC client of the real server."""
    with triton.InferenceServerClient(server[1]) as client:
        yield client


def images_input(*images: bytes) -> triton.InferInput:
    """The ``image`` input as tritonclient.grpc sends it: raw_input_contents, each file after its length."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    return tensor.set_data_from_numpy(np.array(images, dtype=np.object_))


def refused(call: Any, code: grpc.StatusCode, words: str) -> None:
    """``call()`` fails with ``code`` and a message holding ``words``."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == str(code) and words in caught.value.message(), caught.value


def test_health_and_metadata_over_grpc(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    server_metadata = client.get_server_metadata(as_json=True)
    assert server_metadata["name"] == "tsc-snn" and server_metadata["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("tiny", as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "tsc-snn"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"pixels": ("FP32", ["-1", "3", "32", "32"]), "image": ("BYTES", ["-1"])}
    assert [t["name"] for t in meta["outputs"]] == list(OUTPUTS)
    refused(lambda: client.get_model_metadata("nope"), grpc.StatusCode.NOT_FOUND, "'nope' is not loaded")
    refused(lambda: client.is_model_ready("tiny", "2"), grpc.StatusCode.NOT_FOUND, "no version '2'")


def test_raw_images_as_bytes_equal_classify(
    server: tuple[Server, str], client: triton.InferenceServerClient
) -> None:
    result = client.infer("tiny", [images_input(PNG, JPEG)], request_id="g-1")
    response = result.get_response(as_json=True)
    assert response["id"] == "g-1" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == SNN_OUTPUTS
    check_outputs(result, classify(server[0], PNG, JPEG))


def test_fp32_pixels_with_compare_equal_classify(
    server: tuple[Server, str], client: triton.InferenceServerClient
) -> None:
    pixels = np.concatenate([pixels_of(PNG), pixels_of(JPEG)])
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32").set_data_from_numpy(pixels)
    result = client.infer("tiny", [tensor], parameters={"compare": True})
    parameters = result.get_response(as_json=True)["parameters"]
    assert parameters == {"engine": {"string_param": "fast"}, "compare": {"bool_param": True}}
    check_outputs(result, classify(server[0], PNG, JPEG, compare="true"))


def test_malformed_requests_are_invalid_argument(client: triton.InferenceServerClient) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    gray = triton.InferInput("pixels", [1, 1, 28, 28], "FP32")
    gray.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    refused(lambda: client.infer("tiny", [gray]), invalid, "this model takes [N, 3, 32, 32]")
    refused(lambda: client.infer("tiny", [images_input(b"not an image")]), invalid, "image[0]")
    outputs = [triton.InferRequestedOutput("rate_spikes")]
    refused(lambda: client.infer("tiny", [images_input(PNG)], outputs=outputs), invalid, "compare=true")
    refused(lambda: client.infer("nope", [images_input(PNG)]), grpc.StatusCode.NOT_FOUND, "'nope'")


# in-process: the app's lifespan serving gRPC on a free port, called through the proto's own messages


@pytest.fixture(scope="module")
async def app(model_dir: Path) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """An in-process app with TSC_API_KEY and a 64 KiB message limit: its gRPC address and an HTTP client."""
    port = free_port()
    settings = settings_for(model_dir, grpc_port=port, api_key=KEY, max_upload_bytes=64 * 1024)
    async with serve(settings) as http:
        yield f"127.0.0.1:{port}", http


@pytest.fixture
def address(app: tuple[str, httpx.AsyncClient]) -> str:
    """The in-process app's gRPC address."""
    return app[0]


async def call(address: str, method: str, request: Any, **metadata: str) -> Any:
    """Call ``method`` with ``request`` (a message, or bytes for a method the proto does not have), with
    x-api-key TSC_API_KEY unless ``metadata`` says otherwise (an empty value: not sent)."""
    metadata = {"x-api-key": KEY} | metadata
    known = SERVICE.methods_by_name.get(method)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=message_class(known.output_type.name).FromString if known else None,
        )
        return await stub(request, metadata=[(k, v) for k, v in metadata.items() if v])


def infer_request(
    name: str = "image", datatype: str = "BYTES", shape: tuple[int, ...] = (1,), **fields: Any
) -> Any:
    """A ModelInferRequest for ``tiny`` with one input ``name`` and ``fields`` (raw_input_contents, ...)."""
    request = message_class("ModelInferRequest")(model_name="tiny", **fields)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


async def refused_call(
    address: str, code: grpc.StatusCode, words: str, method: str, request: Any, **metadata: str
) -> None:
    """The call fails with ``code`` and a message holding ``words``."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, method, request, **metadata)
    assert caught.value.code() == code and words in (caught.value.details() or ""), caught.value


def serialized(*elements: bytes) -> bytes:
    """BYTES elements in raw form: each one's length in 4 little-endian bytes, then its bytes."""
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


@pytest.mark.anyio
async def test_the_key_is_needed_for_model_calls_only(address: str) -> None:
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    live = message_class("ServerLiveRequest")()
    assert (await call(address, "ServerLive", live, **{"x-api-key": ""})).live
    ready = message_class("ModelReadyRequest")(name="tiny")
    await refused_call(
        address, unauthenticated, "API key is required", "ModelReady", ready, **{"x-api-key": ""}
    )
    await refused_call(address, unauthenticated, "wrong", "ModelReady", ready, **{"x-api-key": "nope"})
    assert (
        await call(address, "ModelReady", ready, **{"x-api-key": "", "authorization": f"Bearer {KEY}"})
    ).ready
    async with triton_aio.InferenceServerClient(address) as client:  # tritonclient's headers are metadata
        assert await client.is_model_ready("tiny", headers={"x-api-key": KEY})
        with pytest.raises(InferenceServerException, match="API key"):
            await client.is_model_ready("tiny")


@pytest.mark.anyio
async def test_contents_answer_as_raw_input_contents_do(address: str) -> None:
    raw = await call(address, "ModelInfer", infer_request(raw_input_contents=[serialized(PNG)]))
    as_contents = infer_request()
    as_contents.inputs[0].contents.bytes_contents.append(PNG)
    as_contents.parameters["binary_data_output"].bool_param = False
    answer = await call(address, "ModelInfer", as_contents)
    assert [o.name for o in answer.outputs] == [o.name for o in raw.outputs] == SNN_OUTPUTS
    assert not answer.raw_output_contents and len(raw.raw_output_contents) == len(SNN_OUTPUTS)
    spikes = SNN_OUTPUTS.index("spikes")
    assert list(answer.outputs[spikes].contents.int64_contents) == list(
        np.frombuffer(raw.raw_output_contents[spikes], "<i8")
    )
    pixels = pixels_of(PNG)
    fp32 = infer_request("pixels", "FP32", pixels.shape, outputs=[{"name": "spikes"}])
    fp32.inputs[0].contents.fp32_contents.extend(pixels.ravel().tolist())
    (spikes_raw,) = (await call(address, "ModelInfer", fp32)).raw_output_contents
    assert spikes_raw == raw.raw_output_contents[spikes]


MALFORMED = [
    (infer_request(), "has no data"),
    (infer_request(raw_input_contents=[b"", b""]), "2 entries for 1 inputs"),
    (infer_request("pixels", "FP32", (1, 3, 32, 32), raw_input_contents=[b"\0" * 12]), "holds 12 bytes"),
    (infer_request("pixels", "INT64", (1, 3, 32, 32), raw_input_contents=[b""]), "must be FP32, not INT64"),
    (infer_request("labels", raw_input_contents=[serialized(PNG)]), "inputs.0.name"),
    (infer_request(raw_input_contents=[serialized(PNG)], outputs=[{"name": "x"}]), "unknown output 'x'"),
    (infer_request(raw_input_contents=[b"\1\0\0\0"]), "says 1 bytes"),
    (message_class("ModelInferRequest")(), "name a model"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("request_", "words"), MALFORMED)
async def test_each_malformed_request_is_invalid_argument(address: str, request_: Any, words: str) -> None:
    await refused_call(address, grpc.StatusCode.INVALID_ARGUMENT, words, "ModelInfer", request_)


@pytest.mark.anyio
async def test_limits_and_calls_not_served(address: str) -> None:
    large = infer_request(raw_input_contents=[serialized(b"x" * 70_000)])
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    await refused_call(address, exhausted, "larger than max", "ModelInfer", large)
    many = infer_request(shape=(40,), raw_input_contents=[serialized(*[b"x"] * 40)])
    await refused_call(address, exhausted, "at most 32 per request", "ModelInfer", many)
    index = b""  # Triton's RepositoryIndexRequest, empty
    await refused_call(address, grpc.StatusCode.UNIMPLEMENTED, "/v2/repository", "RepositoryIndex", index)
    await refused_call(address, grpc.StatusCode.UNIMPLEMENTED, "", "ModelStreamInfer", index)


@pytest.mark.anyio
async def test_calls_are_counted_with_the_rest_by_method_path_and_status(
    app: tuple[str, httpx.AsyncClient],
) -> None:
    address, http = app
    missing = message_class("ModelMetadataRequest")(name="nope")
    await refused_call(address, grpc.StatusCode.NOT_FOUND, "'nope'", "ModelMetadata", missing)
    assert (await call(address, "ServerLive", message_class("ServerLiveRequest")())).live
    page = (await http.get("/metrics")).text
    for method, status in (("ModelMetadata", 404), ("ServerLive", 200)):
        route = f"/{SERVICE_NAME}/{method}"
        assert f'tsc_http_requests_total{{method="POST",route="{route}",status="{status}"}}' in page
        assert f'tsc_http_request_duration_seconds_count{{method="POST",route="{route}"}}' in page


def test_the_descriptor_set_is_compiled_from_the_vendored_proto(tmp_path: Path) -> None:
    out = tmp_path / DESCRIPTORS
    assert protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", PROTO]) == 0
    assert out.read_bytes() == (PROTO_DIR / DESCRIPTORS).read_bytes(), "run make proto"


@pytest.mark.parametrize(
    ("peer", "client"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", "/tmp/s")],
)
def test_the_caller_is_its_address_as_rest_has_it(peer: str, client: str) -> None:
    assert _client(peer) == client

"""gRPC v2: the Open Inference Protocol's ``inference.GRPCInferenceService`` on TSC_GRPC_PORT.

Served by ``grpc.aio`` in the app's event loop, started and stopped by its lifespan, and through the same
``DataPlane`` as the REST routes: the same models, batching, lanes and per-client queue share, inputs read by
``service.tensors`` (``service.grpc_codec`` converts the messages). Messages are limited to
TSC_MAX_UPLOAD_BYTES and calls in progress to TSC_LIMIT_CONCURRENCY (RESOURCE_EXHAUSTED beyond either). With
TSC_API_KEY set, the model calls need it, in the ``x-api-key`` metadata or as ``authorization: Bearer <key>``
(checked before the message is read); ServerLive, ServerReady and ServerMetadata stay open, as /v2/health and
/v2 do. Calls are counted in ``tsc_http_requests`` (method POST, route the gRPC method's path, status the
HTTP status of the outcome) and timed in ``tsc_http_request_duration_seconds``. Errors are gRPC status
codes with the message REST would give (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, RESOURCE_EXHAUSTED,
UNAVAILABLE), never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service import __version__
from service.auth import key_problem
from service.dataplane import DataPlane
from service.errors import InvalidRequest, NotReady, ServiceError, Unauthorized
from service.grpc_codec import SERVICE, SERVICE_NAME, as_message, infer_request, infer_response, message_class
from service.grpc_codec import metadata_response as metadata_message
from service.protocol import EXTENSIONS, V2Live, V2Ready, V2ServerMetadata
from service.tensors import encoded_images, metadata, output_tensors, pixels, requested_outputs

log = logging.getLogger(__name__)

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
STOP_S = 2.0  # at shutdown, how long gRPC calls in progress get to end (after uvicorn's HTTP grace period)
OPEN = frozenset({"ServerLive", "ServerReady", "ServerMetadata"})  # like /v2/health and /v2: no key needed
REPOSITORY = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")  # Triton's; not in the proto
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
FAILED = "the server failed on this call; the failure is logged"


class Unimplemented(ServiceError):
    """A call of Triton's protocol that this server does not answer over gRPC."""

    status, error = 501, "not_implemented"


class InferenceService:
    """The calls: messages in, ``DataPlane`` calls, messages out; errors raised as ``ServiceError``."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Live while the process serves."""
        return as_message("ServerLiveResponse", V2Live(live=True))

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready once every model is loaded and warmed up (false while loading and at shutdown)."""
        try:
            self.dataplane.ready()
        except NotReady:
            return as_message("ServerReadyResponse", V2Ready(ready=False))
        return as_message("ServerReadyResponse", V2Ready(ready=True))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The server's name, version and protocol extensions, as GET /v2 gives them."""
        answer = V2ServerMetadata(name="tsc-snn", version=__version__, extensions=EXTENSIONS)
        return as_message("ServerMetadataResponse", answer)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Whether the model (of the version, when named) is loaded; NOT_FOUND for one that is not served."""
        try:
            self._model(request.name, request.version)
        except NotReady:
            return message_class("ModelReadyResponse")(ready=False)
        return message_class("ModelReadyResponse")(ready=True)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The model's inputs and outputs, as GET /v2/models/{name} gives them."""
        served = self._model(request.name, request.version)
        return metadata_message(metadata(served, self.dataplane.versions(served.name)))

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Classify pixels or encoded images, as POST /v2/models/{name}/infer does."""
        dataplane = self.dataplane
        served = self._model(request.model_name, request.model_version)
        body, data = infer_request(request)
        options, tensor, spec = body.parameters, body.inputs[0], served.net.input_spec
        compare = bool(served.settings.compare) if options.compare is None else options.compare
        outputs = requested_outputs(body, compare)
        most = dataplane.settings.max_batch_files
        if tensor.name == "pixels":
            images = pixels(tensor, data[0], spec, most)
        else:
            encoded = encoded_images(tensor, data[0], most)
            decoding = (dataplane.decode(item, None, spec, f"image[{i}]") for i, item in enumerate(encoded))
            images = list(await asyncio.gather(*decoding))
        client = _client(context.peer())
        inference = await dataplane.infer(served, images, options.engine, compare, client=client)
        raw = "binary_data_output" not in body.parameters.model_fields_set or options.binary_data_output
        answered = {"engine": options.engine, "compare": compare}
        names = (served.name, served.net.version)
        return infer_response(names, request.id, answered, output_tensors(inference, list(outputs)), raw)

    def _model(self, name: str, version: str) -> Any:
        """The served model named in a request (its version when one is given)."""
        if not name:
            raise InvalidRequest("name a model: the request's model name is empty")
        return self.dataplane.model(name, version or None)


def _client(peer: str) -> str:
    """The caller's address in a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``), as REST has it."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return address
    return address.rpartition(":")[0].strip("[]")


def _presented_key(metadata: tuple[tuple[str, Any], ...] | None) -> str | None:
    """The API key a call carries: ``authorization: Bearer <key>``, else ``x-api-key``, as REST reads it."""
    values = {key: value for key, value in metadata or () if isinstance(value, str)}
    scheme, _, credentials = values.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials else values.get("x-api-key")


class Handler(grpc.GenericRpcHandler):
    """Routes the service's calls to ``InferenceService``, behind the key check, the metrics and the mapping
    of ``ServiceError`` to status codes."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.service_ = InferenceService(dataplane)
        self.metrics = dataplane.metrics
        key = dataplane.settings.api_key
        self.key = None if key is None else key.get_secret_value()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The handler of one call, or None (UNIMPLEMENTED) for a method the service does not have."""
        path = handler_call_details.method
        service, _, name = path.lstrip("/").partition("/")
        if service != SERVICE_NAME:
            return None
        if name in REPOSITORY:
            return self._handler(path, _repository(name))
        method = SERVICE.methods_by_name.get(name)
        if method is None:
            return None
        metadata = handler_call_details.invocation_metadata  # type: ignore[attr-defined]
        problem = (
            None if name in OPEN or self.key is None else key_problem(_presented_key(metadata), self.key)
        )
        if problem is not None:  # refused before the message is read: no deserializer
            return self._handler(path, _refused(problem))
        request_class = message_class(method.input_type.name)
        return self._handler(path, getattr(self.service_, name), request_class.FromString)

    def _handler(
        self, path: str, behaviour: Behaviour, deserializer: Callable[[bytes], Any] | None = None
    ) -> grpc.RpcMethodHandler:
        """A unary handler running ``behaviour``, counted and timed, its errors as status codes."""

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, status = time.perf_counter(), 200
            self.metrics.in_flight.inc()
            try:
                return await behaviour(request, context)
            except ServiceError as exc:
                status, code, detail = exc.status, CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail
            except asyncio.CancelledError:
                status = 499  # the client cancelled, or the server is stopping
                raise
            except Exception as exc:
                log.error("unhandled %s on gRPC %s", type(exc).__name__, path)
                status, code, detail = 500, grpc.StatusCode.INTERNAL, FAILED
            finally:
                self.metrics.in_flight.dec()
                self.metrics.requests.labels("POST", path, str(status)).inc()
                self.metrics.request_duration.labels("POST", path).observe(time.perf_counter() - started)
            await context.abort(code, detail)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=deserializer, response_serializer=_serialize
        )


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def _refused(problem: str) -> Behaviour:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unauthorized(problem)

    return refuse


def _repository(name: str) -> Behaviour:
    async def unimplemented(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented(
            f"{name} is not served over gRPC yet; use the REST model repository routes (/v2/repository)"
        )

    return unimplemented


def address(host: str, port: int) -> str:
    """``host:port`` for a gRPC bind, brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(dataplane: DataPlane) -> grpc.aio.Server | None:
    """Start serving gRPC on TSC_HOST:TSC_GRPC_PORT in the running event loop (None: TSC_GRPC_PORT=0)."""
    settings = dataplane.settings
    if settings.grpc_port == 0:
        return None
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", settings.max_upload_bytes)],
        maximum_concurrent_rpcs=settings.limit_concurrency,
    )
    server.add_generic_rpc_handlers((Handler(dataplane),))
    bound = address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(bound)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {bound} (TSC_HOST, TSC_GRPC_PORT): {exc}") from None
    await server.start()
    log.info("gRPC (Open Inference Protocol v2) on %s", bound)
    return server


async def stop_grpc(server: grpc.aio.Server | None, grace_s: float = STOP_S) -> None:
    """Refuse new calls and give those in progress ``grace_s`` seconds to end (by then uvicorn's grace
    period for HTTP has passed, during which gRPC calls were still answered)."""
    if server is not None:
        await server.stop(grace_s)

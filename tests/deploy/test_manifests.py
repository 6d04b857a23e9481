"""deploy/k8s and deploy/kserve validated offline (strict schemas), and consistent with the image and app."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from service.app import create_app
from service.settings import Settings
from tests.deploy.deploytools import K8S, KSERVE, REPO, by_kind, documents, final_stage, image_env, image_user

# the oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships
K8S_VERSIONS = ("1.25", "1.37")
ISVC_SCHEMA = Path(__file__).parent / "schemas" / "inferenceservice-serving.kserve.io-v1beta1.json"
IMAGE = "tsc-snn:0.1.0"


def kustomization_resources() -> list[Path]:
    """The files deploy/k8s/kustomization.yaml lists."""
    (kustomization,) = documents(K8S / "kustomization.yaml")
    return [K8S / name for name in kustomization["resources"]]


def k8s() -> dict[str, dict[str, Any]]:
    """The objects ``kubectl apply -k deploy/k8s`` creates, by kind."""
    return by_kind(kustomization_resources())


def isvc() -> dict[str, Any]:
    """The KServe InferenceService."""
    return by_kind([KSERVE / "inferenceservice.yaml"])["InferenceService"]


def isvc_validator() -> jsonschema.Draft202012Validator:
    """The vendored InferenceService schema, its Kubernetes types resolved in the strict 1.37 definitions."""
    version = K8S_VERSIONS[-1]
    definitions = schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
    )
    schema = json.loads(ISVC_SCHEMA.read_text())
    registry = Registry().with_resources(
        [(d["$id"], Resource.from_contents(d)) for d in (definitions, schema)]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, the serving container) of the Deployment and of the InferenceService."""
    pod = k8s()["Deployment"]["spec"]["template"]["spec"]
    predictor = isvc()["spec"]["predictor"]
    serving = [c for c in predictor["containers"] if c["name"] == "kserve-container"]
    return [("Deployment", pod, pod["containers"][0]), ("InferenceService", predictor, serving[0])]


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain environment variables (those with a value)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_kustomization_lists_every_manifest() -> None:
    listed = {path.name for path in kustomization_resources()}
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
def test_kubernetes_objects_validate_strictly(kind: str, version: str) -> None:
    assert kubernetes_validate.validate(k8s()[kind], version, strict=True) == version


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(k8s()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_inferenceservice_validates() -> None:
    isvc_validator().validate(isvc())


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("predictor", "protocolVersion", "v2"),  # model-format predictors only: PROTOCOL for a container
        ("container", "readinesProbe", {}),
        ("container", "env", [{"name": "PROTOCOL", "value": "v3"}]),
    ],
)
def test_inferenceservice_schema_rejects(where: str, field: str, value: object) -> None:
    bad = copy.deepcopy(isvc())
    predictor = bad["spec"]["predictor"]
    (predictor if where == "predictor" else predictor["containers"][0])[field] = value
    assert not isvc_validator().is_valid(bad)


def test_inferenceservice_speaks_open_inference_protocol_v2() -> None:
    predictor = isvc()["spec"]["predictor"]
    assert [c["name"] for c in predictor["containers"]] == ["kserve-container"]
    assert env_values(predictor["containers"][0])["PROTOCOL"] == "v2"
    annotations = isvc()["metadata"]["annotations"]
    # KServe's webhook checks scaleMetric cpu only as an HPA metric in Standard mode with the hpa class
    # ("RawDeployment", the old name, falls to the Knative checks, which refuse cpu)
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa" and predictor["scaleMetric"] == "cpu"
    assert 1 <= predictor["scaleTarget"] <= 100  # a utilisation percentage


@pytest.mark.parametrize("index", [0, 1])
def test_probes_ask_routes_the_service_has(index: int) -> None:
    where, _, container = containers()[index]
    # the app's GET routes (app.routes shows included routers as opaque entries in this FastAPI)
    gets = {path for path, methods in create_app(Settings()).openapi()["paths"].items() if "get" in methods}
    probes = {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    gets_of = {name: probe["httpGet"] for name, probe in probes.items()}
    assert {g["path"] for g in gets_of.values()} <= gets, where
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert {ports.get(g["port"], g["port"]) for g in gets_of.values()} == {int(image_env()["TSC_PORT"])}
    ready = "/readyz" if where == "Deployment" else "/v2/health/ready"
    assert gets_of["readinessProbe"]["path"] == gets_of["startupProbe"]["path"] == ready
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # the HEALTHCHECK's start period


@pytest.mark.parametrize("index", [0, 1])
def test_container_runs_as_the_image_runs(index: int) -> None:
    where, pod, container = containers()[index]
    uid, gid = image_user()
    assert (
        container["image"]
        == IMAGE
        == yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["tsc-snn"]["image"]
    ), where
    env = env_values(container)
    ports = {p.get("name", "http"): p["containerPort"] for p in container["ports"]}
    assert ports.pop("http") == int(env["TSC_PORT"])  # KServe's container has one port: HTTP
    assert ports == ({"grpc": int(env["TSC_GRPC_PORT"])} if ports else {})
    for name in ("TSC_HOST", "TSC_PORT", "TSC_GRPC_PORT", "TSC_MODEL_DIR"):
        assert env[name] == image_env()[name], (where, name)
    (key,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "TSC_API_KEY"]
    assert key["optional"] is True
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} >= tmp != set()


def test_the_image_user_and_group_have_one_id() -> None:
    uid, gid = image_user()
    (run,) = [args for name, args in final_stage() if name == "RUN" and "useradd" in args]
    assert re.search(rf"groupadd .*--gid {gid} tsc\b", run), run
    assert re.search(rf"useradd .*--uid {uid} --gid {gid}\b", run), run


def test_service_hpa_and_deployment_agree() -> None:
    objects = k8s()
    deployment, service, hpa = objects["Deployment"], objects["Service"], objects["HorizontalPodAutoscaler"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container["resources"]["requests"]


def test_the_pod_has_time_for_prestop_the_grace_period_and_an_abandoned_batch() -> None:
    from service.dataplane import STOP_WAIT_S
    from service.grpc_server import STOP_S as GRPC_STOP_S
    from service.workers import STOP_S

    pod = k8s()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    pre_stop = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", command[-1]).group(1))
    grace = float(
        env_values(container).get(
            "TSC_GRACEFUL_TIMEOUT_S", Settings.model_fields["graceful_timeout_s"].default
        )
    )
    stop = GRPC_STOP_S + STOP_WAIT_S + 2 * STOP_S  # gRPC's last calls, the batches, the engine processes
    assert pre_stop + grace + stop + 2 <= pod["terminationGracePeriodSeconds"]


def test_the_disruption_budget_and_the_scrape_annotations_select_the_model_server() -> None:
    objects = k8s()
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "/metrics" in create_app(Settings()).openapi()["paths"]

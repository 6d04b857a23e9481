"""Helpers of the deployment tests: what docker/Dockerfile's final stage sets, the manifests as objects."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from servicetools import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
KSERVE = REPO / "deploy" / "kserve"


def final_stage() -> list[tuple[str, str]]:
    """The instructions after the Dockerfile's last FROM as (INSTRUCTION, arguments), lines joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    split = [tuple(line.split(maxsplit=1)) for line in logical if line]
    start = max(i for i, (instruction, _) in enumerate(split) if instruction == "FROM")
    return [(instruction, args) for instruction, args in split[start + 1 :]]


def image_env() -> dict[str, str]:
    """The variables the image's ENV instructions set."""
    pairs = [pair for name, args in final_stage() if name == "ENV" for pair in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def image_user() -> tuple[int, int]:
    """The image's USER as numbers (uid, gid)."""
    (user,) = [args for name, args in final_stage() if name == "USER"]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user}: numeric uid:gid expected (Kubernetes' runAsNonRoot checks numbers)"
    return int(match[1]), int(match[2])


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The objects of ``paths`` by kind (one object of each kind expected)."""
    objects = [doc for path in paths for doc in documents(path)]
    kinds = {doc["kind"]: doc for doc in objects}
    assert len(kinds) == len(objects), "one object of each kind expected"
    return kinds

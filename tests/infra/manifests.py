"""Reading and rendering the Kubernetes manifests under ``infra/k8s`` without a cluster.

``render_kustomization`` is a small Kustomize renderer covering exactly the features our kustomizations use
(``resources``, ``namespace``, ``images``, ``labels`` and RFC 6902 JSON ``patches`` with a target); tests
compare it with ``kubectl kustomize`` where kubectl is installed, so it cannot drift silently.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

K8S_DIR = REPO_ROOT / "infra" / "k8s"
SCHEMA_DIR = K8S_DIR / "schemas"
OVERLAYS = ("small", "7b")
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"})

Manifest = dict[str, Any]


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pointer_parts(pointer: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.lstrip("/").split("/")]


def apply_json_patch(doc: Manifest, operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add``/``replace``/``remove`` operations in place; a missing path raises KeyError."""
    for operation in operations:
        *parents, last = _pointer_parts(operation["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        op = operation["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, operation["value"])
            elif op == "replace":
                node[index] = operation["value"]
            else:
                del node[index]
        elif op == "add":
            node[last] = operation["value"]
        else:
            if last not in node:
                raise KeyError(f"{operation['path']}: no such field to {op}")
            if op == "replace":
                node[last] = operation["value"]
            else:
                del node[last]


def _matches(doc: Manifest, target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(actual[key] == value for key, value in target.items())


def iter_containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in a manifest, as Kustomize's image transformer sees them."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (item for item in value if isinstance(item, dict))
            yield from iter_containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_containers(item)


def split_image(image: str) -> tuple[str, str | None]:
    """``"repo/name:tag"`` → ``("repo/name", "tag")``; no tag → None."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None
    return name, tag


def _set_image(docs: list[Manifest], rule: dict[str, str]) -> None:
    for doc in docs:
        for container in iter_containers(doc):
            name, tag = split_image(container["image"])
            if name == rule["name"]:
                new_tag = rule.get("newTag", tag)
                container["image"] = rule.get("newName", name) + (f":{new_tag}" if new_tag else "")


def render_kustomization(directory: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize directory`` would print (same content; order not guaranteed)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[Manifest] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        docs.extend(render_kustomization(path) if path.is_dir() else load_documents(path))
    for patch in spec.get("patches", []):
        targets = [doc for doc in docs if _matches(doc, patch["target"])]
        if len(targets) != 1:
            raise ValueError(f"{directory}: patch {patch['path']} matches {len(targets)} objects, expected 1")
        apply_json_patch(targets[0], yaml.safe_load((directory / patch["path"]).read_text()))
    for rule in spec.get("images", []):
        _set_image(docs, rule)
    for doc in docs:
        if "namespace" in spec and doc["kind"] not in CLUSTER_SCOPED_KINDS:
            doc["metadata"]["namespace"] = spec["namespace"]
        for label in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


@cache
def _rendered(overlay: str) -> tuple[Manifest, ...]:
    return tuple(render_kustomization(K8S_DIR / "overlays" / overlay))


def rendered(overlay: str) -> list[Manifest]:
    """A fresh copy of an overlay's rendered manifests (callers may mutate it)."""
    return copy.deepcopy(list(_rendered(overlay)))


def find(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The single manifest of ``kind`` (and ``name``)."""
    found = [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The vendored JSON Schema of a KubeRay kind (RayCluster, RayJob, RayService)."""
    return json.loads((SCHEMA_DIR / f"{kind.lower()}.schema.json").read_text())

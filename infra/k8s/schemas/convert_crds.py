"""Convert KubeRay CustomResourceDefinitions into JSON Schema files for offline manifest checks.

Usage (from a ray-project/kuberay checkout)::

    python infra/k8s/schemas/convert_crds.py KUBERAY/ray-operator/config/crd/bases infra/k8s/schemas \
        --source "ray-project/kuberay@<commit>"

Each CRD's ``v1`` ``openAPIV3Schema`` becomes ``<kind>.schema.json``. The translation follows how the
Kubernetes API server treats a structural schema with strict field validation:

* objects that list ``properties`` reject unknown fields (``additionalProperties: false``) unless marked
  ``x-kubernetes-preserve-unknown-fields``;
* ``x-kubernetes-int-or-string`` becomes ``integer | string``; ``nullable`` adds ``null``;
* a required field with a ``default`` is optional (the server fills it in before validating);
* descriptions, CEL rules and list/map hints (which JSON Schema cannot express) are dropped, as is the
  server-written ``status`` subtree, to keep the files small.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

DROPPED_KEYS = frozenset({
    "description", "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
})
TRANSLATED_KEYS = frozenset({"nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"})


def to_json_schema(node: Any) -> Any:
    """Translate one OpenAPI v3 (Kubernetes structural) schema node, recursively."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED_KEYS or key in TRANSLATED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        else:
            out[key] = to_json_schema(value)
    if "required" in out and "properties" in node:
        defaulted = {name for name, child in node["properties"].items() if "default" in child}
        out["required"] = [name for name in out["required"] if name not in defaulted]
        if not out["required"]:
            del out["required"]
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def convert_crd(crd: dict[str, Any], version: str, source: str) -> tuple[str, dict[str, Any]]:
    """``(kind, JSON Schema)`` for one CRD document at API ``version``."""
    kind = crd["spec"]["names"]["kind"]
    served = {entry["name"]: entry for entry in crd["spec"]["versions"]}
    if version not in served:
        raise SystemExit(f"{kind}: CRD has no version {version!r} (has {sorted(served)})")
    schema = dict(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"] = {key: value for key, value in schema["properties"].items() if key != "status"}
    converted = to_json_schema(schema)
    converted["additionalProperties"] = False
    converted["required"] = ["apiVersion", "kind", "metadata", "spec"]
    converted["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    converted["properties"]["kind"] = {"const": kind}
    header = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": f"Generated from {source} CRD {crd['metadata']['name']} ({version}) by convert_crds.py",
        "title": kind,
    }
    return kind, {**header, **converted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd_dir", type=Path, help="directory holding ray.io_*.yaml CRDs")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--source", required=True, help="where the CRDs came from, e.g. ray-project/kuberay@SHA")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--kinds", nargs="+", default=["RayCluster", "RayJob", "RayService"])
    args = parser.parse_args()
    for path in sorted(args.crd_dir.glob("ray.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] not in args.kinds:
            continue
        kind, schema = convert_crd(crd, args.version, f"{args.source}:{path.name}")
        target = args.out_dir / f"{kind.lower()}.schema.json"
        target.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{target}: {target.stat().st_size} bytes")


if __name__ == "__main__":
    main()

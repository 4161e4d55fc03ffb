"""Request schemas for the fake providers, written from the providers' published API
descriptions, so that a fake refuses what the real service would refuse.

RunPod: the OpenAPI description of REST v2 in RunPod's public docs repository
(github.com/runpod/docs, api-reference-v2/openapi.json, info.version "2.0.0", commit a900806e
of 2026-08-20): CreatePodRequest (with its `unevaluatedProperties: false`, so unknown fields are
refused), CreateGpuConfig, Mounts/PersistentMount/NetworkMount, CreateTemplateRequest/
TemplateMounts, and the query parameters of GET /v2/catalog/gpus and GET /v2/pods/{id}/logs.

Vast.ai: the documented create fields (docs.vast.ai, "Creating Instances with the API",
Instance Creation Fields Reference) and the offer search as vast-cli builds it
(github.com/vast-ai/vast-python, vast.py at b25bd95: `offers_fields`, the operator dicts,
`order`, `type`, `limit`, `allocated_storage` in GB; gpu_ram in MB, disk_space in GB). Vast does
not document refusing unknown fields, but the search only knows its fields, so the fake
refuses unknown search keys and unknown create fields: a typo fails here instead of being
silently ignored by the real service.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator

_CUDA = {"type": "string", "pattern": r"^\d+\.\d+$"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_PERSISTENT = {
    "type": "object",
    "required": ["size", "path"],
    "additionalProperties": False,
    "properties": {"size": {"type": "integer", "minimum": 10}, "path": {"type": "string"}},
}
_NETWORK = {
    "type": "object",
    "required": ["volumeId", "path"],
    "additionalProperties": False,
    "properties": {"volumeId": {"type": "string"}, "path": {"type": "string"}},
}
_CONTAINER = {  # BaseContainerConfig + ContainerConfig
    "args": {"type": "string"},
    "disk": {"type": "integer", "minimum": 1},
    "env": {"type": "object", "additionalProperties": {"type": "string"}},
    "image": {"type": "string"},
    "ports": _STRINGS,
    "registry": {"type": ["string", "null"]},
}

RUNPOD_CREATE_POD = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,  # unevaluatedProperties: false over the allOf
    "properties": {
        **_CONTAINER,
        "name": {"type": "string", "minLength": 1},
        "cloud": {"enum": ["SECURE", "COMMUNITY"]},
        "cpu": {"type": "object"},
        "dataCenterIds": _STRINGS,
        "globalNetworking": {"type": "boolean"},
        "gpu": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "allowedCudaVersions": {"type": "array", "items": _CUDA},
                "minCudaVersion": _CUDA,
            },
        },
        "mounts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "persistent": _PERSISTENT,
                "network": {"type": "array", "maxItems": 1, "items": _NETWORK},
            },
        },
        "startJupyter": {"type": "boolean"},
        "startSsh": {"type": "boolean"},
        "templateId": {"type": "string", "minLength": 1},
    },
    "if": {"not": {"required": ["templateId"]}},
    "then": {"required": ["image"]},
}

RUNPOD_CREATE_TEMPLATE = {
    "type": "object",
    "required": ["name", "image"],
    "additionalProperties": False,
    "properties": {
        **_CONTAINER,
        "name": {"type": "string", "minLength": 1},
        "allowedCudaVersions": {"type": "array", "items": _CUDA},
        "category": {"enum": ["CPU", "NVIDIA", "AMD"]},
        "mounts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"persistent": _PERSISTENT},
        },
        "public": {"type": "boolean"},
        "serverless": {"type": "boolean"},
        "startJupyter": {"type": "boolean"},
        "startSsh": {"type": "boolean"},
    },
}

RUNPOD_CATALOG_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "include": {"enum": ["AVAILABILITY"]},
        "product": {
            "type": "string",
            "pattern": r"^(POD|CLUSTER|SERVERLESS)(,(POD|CLUSTER|SERVERLESS))*$",
        },
        "count": {"type": "string", "pattern": r"^[1-9][0-9]*$"},
        "cloud": {"enum": ["SECURE", "COMMUNITY"]},
        "countryCodes": {"type": "string", "pattern": r"^[A-Z]{2}(,[A-Z]{2})*$"},
        "cudaVersions": {"type": "string", "pattern": r"^\d+\.\d+(,\d+\.\d+)*$"},
        "minCudaVersion": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
    },
    # product is required with include=AVAILABILITY and valid only with it; so are count,
    # cloud, countryCodes and the CUDA filters; the two CUDA filters exclude each other.
    "if": {"required": ["include"]},
    "then": {"required": ["product"]},
    "else": {
        "not": {
            "anyOf": [
                {"required": [k]}
                for k in (
                    "product",
                    "count",
                    "cloud",
                    "countryCodes",
                    "cudaVersions",
                    "minCudaVersion",
                )
            ]
        }
    },
    "not": {"required": ["cudaVersions", "minCudaVersion"]},
}

RUNPOD_LOGS_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "source": {"enum": ["container", "system"]},
        "tail": {"type": "string", "pattern": r"^([0-9]{1,3}|[0-4][0-9]{3}|5000)$"},
        "since": {"type": "string"},
    },
}

VAST_OFFER_FIELDS = (  # vast-cli offers_fields (reliability2 is the API's own name too)
    "bw_nvlink",
    "compute_cap",
    "cpu_arch",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ghz",
    "cpu_ram",
    "cuda_max_good",
    "datacenter",
    "direct_port_count",
    "driver_version",
    "disk_bw",
    "disk_space",
    "dlperf",
    "dlperf_per_dphtotal",
    "dph_total",
    "duration",
    "external",
    "flops_per_dphtotal",
    "gpu_arch",
    "gpu_display_active",
    "gpu_frac",
    "gpu_mem_bw",
    "gpu_name",
    "gpu_ram",
    "gpu_total_ram",
    "gpu_max_power",
    "gpu_max_temp",
    "has_avx",
    "host_id",
    "id",
    "inet_down",
    "inet_down_cost",
    "inet_up",
    "inet_up_cost",
    "machine_id",
    "min_bid",
    "mobo_name",
    "num_gpus",
    "pci_gen",
    "pcie_bw",
    "reliability",
    "reliability2",
    "rentable",
    "rented",
    "storage_cost",
    "static_ip",
    "total_flops",
    "ubuntu_version",
    "verification",
    "verified",
    "vms_enabled",
    "geolocation",
)
_SCALAR = {"type": ["number", "string", "boolean"]}
_OPERATORS = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        **{op: _SCALAR for op in ("eq", "neq", "gt", "gte", "lt", "lte")},
        "in": {"type": "array"},
        "notin": {"type": "array"},
    },
}

VAST_SEARCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{field: _OPERATORS for field in VAST_OFFER_FIELDS},
        # Units: gpu_ram is MB (an 80 GB card reports about 81920), disk_space GB.
        "gpu_ram": {
            **_OPERATORS,
            "properties": {**_OPERATORS["properties"], "gte": {"type": "number", "minimum": 1000}},
        },
        "order": {
            "type": "array",
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "prefixItems": [{"enum": list(VAST_OFFER_FIELDS)}, {"enum": ["asc", "desc"]}],
            },
        },
        "type": {"enum": ["on-demand", "bid", "reserved"]},
        "limit": {"type": "integer", "minimum": 1},
        "allocated_storage": {"type": "number", "exclusiveMinimum": 0},  # GB
        "disable_bundling": {"type": "boolean"},
    },
}

VAST_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "client_id": {"const": "me"},
        "image": {"type": "string", "minLength": 1},
        "template_id": {"type": ["integer", "string"]},
        "template_hash_id": {"type": "string"},
        "label": {"type": "string"},
        "disk": {"type": "number", "exclusiveMinimum": 0},  # GB
        "runtype": {
            "enum": [
                "ssh",
                "jupyter",
                "args",
                "ssh_proxy",
                "ssh_direct",
                "jupyter_proxy",
                "jupyter_direct",
            ]
        },
        "target_state": {"enum": ["running", "stopped"]},
        "price": {"type": "number", "minimum": 0.001, "maximum": 128},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "onstart": {"type": "string"},
        "args_str": {"type": "string"},
        "args": _STRINGS,
        "use_jupyter_lab": {"type": "boolean"},
        "jupyter_dir": {"type": "string"},
        "python_utf8": {"type": "boolean"},
        "lang_utf8": {"type": "boolean"},
        "image_login": {"type": "string"},
        "cancel_unavail": {"type": "boolean"},
        "vm": {"type": "boolean"},
    },
    "anyOf": [
        {"required": ["image"]},
        {"required": ["template_hash_id"]},
        {"required": ["template_id"]},
    ],
}

VAST_REQUEST_LOGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tail": {"type": ["string", "integer"], "pattern": r"^[0-9]+$"},
        "filter": {"type": "string"},
        "daemon_logs": {"type": "string"},
    },
}

VAST_SHOW_INSTANCE_QUERY = {  # vast-cli `show instance`: GET /instances/{id}/?owner=me
    "type": "object",
    "required": ["owner"],
    "additionalProperties": False,
    "properties": {"owner": {"const": "me"}},
}

# (provider, method, path regex) -> (what is checked, schema)
ENDPOINTS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("runpod", "POST", r"^/v2/pods$", "body", RUNPOD_CREATE_POD),
    ("runpod", "POST", r"^/v2/templates$", "body", RUNPOD_CREATE_TEMPLATE),
    ("runpod", "GET", r"^/v2/catalog/gpus$", "query", RUNPOD_CATALOG_QUERY),
    ("runpod", "GET", r"^/v2/pods/[^/]+/logs$", "query", RUNPOD_LOGS_QUERY),
    ("vast", "POST", r"^/api/v0/bundles/$", "body", VAST_SEARCH),
    ("vast", "PUT", r"^/api/v0/asks/[0-9]+/$", "body", VAST_CREATE),
    ("vast", "PUT", r"^/api/v0/instances/request_logs/[0-9]+/$", "body", VAST_REQUEST_LOGS),
    ("vast", "GET", r"^/api/v0/instances/[0-9]+/$", "query", VAST_SHOW_INSTANCE_QUERY),
]


def violations(
    provider: str, method: str, path: str, query: dict[str, list[str]], body: Any
) -> list[str]:
    """What the provider would refuse in this request (empty: nothing)."""
    for name, verb, pattern, part, schema in ENDPOINTS:
        if name == provider and verb == method and re.match(pattern, path):
            doc = body if part == "body" else {k: v[-1] for k, v in query.items()}
            if part == "query" and any(len(v) > 1 for v in query.values()):
                return ["a query parameter is repeated"]
            return [
                f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in Draft202012Validator(schema).iter_errors(doc)
            ]
    return []

"""Pulumi mocks and helpers for the infra tests.

Pulumi's runtime settings are process-global, so every program run gets a fresh `Mocks`, a fresh
root stack and its own config, and the `_reset_pulumi` fixture clears config afterwards. The
program is imported by path (infra/ is not an installed package) and called inside the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockMonitor

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
FIXTURE_CRDS = Path(__file__).parent / "fixtures" / "crds"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

# Secret inputs reach the mock wrapped in this envelope (pulumi/runtime/rpc.py).
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET = "1b47061264138c4ac30d75fd1eb44270"
ACCOUNT = "123456789012"
STACKS = ("aws-us-east-1", "aws-us-west-2", "gcp-us-central1")


def unsecret(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(_SIG) == _SECRET:
            return unsecret(value.get("value"))
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


def is_secret_input(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIG) == _SECRET


def crds_dir() -> Path:
    """The repository's CRDs once they are generated; the fixture CRDs until then."""
    repo = REPO / "crds"
    return repo if repo.is_dir() and any(repo.glob("*.yaml")) else FIXTURE_CRDS


@dataclass
class Res:
    typ: str
    name: str
    inputs: dict[str, Any]  # secrets unwrapped
    raw: dict[str, Any]  # as sent, secrets still wrapped
    provider: str | None

    @property
    def provider_id(self) -> str | None:
        return self.provider.split("::")[-1] if self.provider else None


class Mocks(pulumi.runtime.Mocks):
    """Records every registration and fills in the outputs a cloud provider would compute."""

    def __init__(self) -> None:
        self.resources: list[Res] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.provider_regions: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.resources.append(
            Res(args.typ, args.name, unsecret(inputs), inputs, args.provider or None)
        )
        rid = f"{args.name}-id"
        out: dict[str, Any] = {**inputs}
        out.setdefault("name", args.name)
        out["arn"] = f"arn:aws:mock:us-east-1:{ACCOUNT}:{args.typ.split(':')[-1]}/{out['name']}"
        typ = args.typ
        if typ == "pulumi:providers:aws":
            self.provider_regions[rid] = str(inputs.get("region"))
        elif typ == "aws:eks/cluster:Cluster":
            out.update(
                endpoint=f"https://{out['name']}.eks.example",
                certificateAuthority={"data": "Q0EtREFUQQ=="},
                vpcConfig={**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": "sg-cluster"},
            )
        elif typ == "aws:sqs/queue:Queue":
            out["url"] = f"https://sqs.example/{ACCOUNT}/{out['name']}"
        elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
            out["latestVersion"] = 1
        elif typ == "aws:kms/key:Key":
            out["keyId"] = rid
        elif typ == "gcp:container/cluster:Cluster":
            out.update(endpoint="203.0.113.10", masterAuth={"clusterCaCertificate": "Q0E="})
        elif typ == "gcp:serviceaccount/account:Account":
            out["email"] = f"{inputs['accountId']}@{'p'}.iam.gserviceaccount.com"
        return rid, out

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            pid = (args.provider or "").split("::")[-1]
            region = self.provider_regions.get(pid, "us-east-1")
            return {"names": [f"{region}{z}" for z in "abcd"], "zoneIds": []}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "x"}
        if token == "gcp:organizations/getProject:getProject":
            return {"number": "424242424242", "projectId": args.args.get("projectId")}
        return {}


@dataclass
class Graph:
    """What one program run registered."""

    mocks: Mocks
    urns: list[str]
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def resources(self) -> list[Res]:
        return self.mocks.resources

    def all(self, typ: str) -> list[Res]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_contains: str = "") -> Res:
        found = [r for r in self.all(typ) if name_contains in r.name]
        assert len(found) == 1, (
            f"expected one {typ} ~{name_contains!r}, got {[r.name for r in found]}"
        )
        return found[0]

    def by_name(self, name: str) -> Res:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, got {len(found)}"
        return found[0]

    def types(self) -> set[str]:
        return {r.typ for r in self.resources}


def stack_config(stack: str) -> dict[str, Any]:
    return dict(yaml.safe_load((INFRA / f"Pulumi.{stack}.yaml").read_text())["config"])


def _as_config_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_program(
    stack: str,
    program: Callable[[], Any],
    config: Mapping[str, Any],
    secret_keys: tuple[str, ...] = (),
) -> Graph:
    """Run `program` under fresh mocks, with `config` as the stack's Pulumi config."""
    mocks = Mocks()
    monitor = MockMonitor(mocks)
    pulumi_settings.ROOT.set(None)  # a new root Stack resource for this run
    pulumi.runtime.set_mocks(
        mocks, project="modelplane", stack=stack, preview=False, monitor=monitor
    )
    pulumi.runtime.set_all_config(
        {k: _as_config_value(v) for k, v in config.items()}, list(secret_keys)
    )
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run() -> Any:
        cluster = program()
        if cluster is None:
            return None
        clusters = cluster if isinstance(cluster, list) else [cluster]

        async def collect() -> None:
            for i, c in enumerate(clusters):
                result[i] = {
                    "kubeconfig": await c.kubeconfig.future(),
                    "kubeconfig_secret": await c.kubeconfig.is_secret(),
                    "endpoint": await pulumi.Output.from_input(c.endpoint).future(),
                    "cluster_name": await pulumi.Output.from_input(c.cluster_name).future(),
                    "region": c.region,
                    "gpu_node_class_names": list(c.gpu_node_class_names),
                }

        return asyncio.ensure_future(collect())

    _run()
    urns = list(monitor.get_registered_resources())
    return Graph(mocks, urns, result.get(0, {}) | {"all": result})


def run_stack(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    secret_keys: tuple[str, ...] = (),
    crds: Path | None = None,
) -> Graph:
    """Run the real program (`modelplane_infra.program.main`) for a stack file, with overrides
    (`modelplane:key` -> value; None removes the key)."""
    from modelplane_infra.program import main

    config = stack_config(stack)
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return run_program(stack, lambda: main(crds or crds_dir()), config, secret_keys)

"""Typed stack configuration, validated before any resource is declared.

Every setting is a Pulumi config key in the project namespace (`modelplane:<key>`); structured
values are YAML maps/lists in `Pulumi.<stack>.yaml`. `load()` turns the raw keys into one of three
pydantic models, `AwsStack`, `GcpStack` or `LocalStack` (an existing cluster reached through a
kubeconfig, e.g. the local GPU cluster), and raises `ConfigError` naming every bad key with the
values it accepts. Secrets are only accepted from keys stored as Pulumi secrets.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelplane.catalog.accelerators import ACCELERATORS_BY_NAME
from modelplane_infra import regions

NAMESPACE = "modelplane"
CLOUDS = ("aws", "gcp", "local")
#: Keys whose value must be stored as a Pulumi secret (`pulumi config set --secret`).
SECRET_KEYS = frozenset({"registryCredentials"})
#: Chart value `capacityProvider` per cloud: Karpenter on EKS, GKE-autoscaled pools on GKE, and
#: the pools an existing cluster already has (local).
CAPACITY_PROVIDER = {"aws": "karpenter", "gcp": "static", "local": "static"}


class ConfigError(ValueError):
    """The stack configuration is missing a value or holds a wrong one."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration:\n{lines}")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR block ({exc})") from None


Cidr = Annotated[str, AfterValidator(_cidr)]
K8sVersion = Annotated[str, Field(pattern=r"^1\.\d{2}$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Image(_Model):
    repository: str = Field(min_length=1)
    tag: str = Field(min_length=1)


class Operator(_Model):
    """The modelplane chart and the values Pulumi sets on it."""

    image: Image
    #: Local chart directory (relative to infra/) or an oci:// reference.
    chart: str = "../charts/modelplane"
    chart_version: str | None = None
    #: The Helm release's name (it prefixes the chart's cluster-scoped objects).
    release: str = Field("modelplane", pattern=r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
    namespace: str = Field("modelplane-system", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    resync_interval_seconds: int = Field(60, ge=10, le=3600)
    service_monitor: bool = False


class AwsNetwork(_Model):
    cidr: Cidr = "10.0.0.0/16"
    zone_count: int = Field(3, ge=2, le=6)
    #: Explicit zone names (e.g. to pick zones with GPU stock); default: the first available.
    availability_zones: list[str] | None = None

    @field_validator("cidr")
    @classmethod
    def _room_for_subnets(cls, v: str) -> str:
        net = ipaddress.ip_network(v)
        if net.version != 4:
            raise ValueError(f"{v} must be an IPv4 range")
        if net.prefixlen > 20:
            raise ValueError(f"{v} is too small; use a /20 or larger (e.g. 10.0.0.0/16)")
        return v


class AwsSystemNodes(_Model):
    instance_types: list[str] = Field(default_factory=lambda: ["m7i.xlarge"], min_length=1)
    min_size: int = Field(2, ge=1)
    desired_size: int = Field(2, ge=1)
    max_size: int = Field(4, ge=1)
    disk_gib: int = Field(100, ge=20, alias="diskGiB")

    @model_validator(mode="after")
    def _ordered(self) -> AwsSystemNodes:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError("need minSize <= desiredSize <= maxSize")
        return self


CapacityType = Literal["on-demand", "spot", "reserved"]


def _on_demand() -> list[CapacityType]:
    return ["on-demand"]


class Karpenter(_Model):
    chart_version: str = "1.14.1"
    #: AL2023 alias: Karpenter resolves the NVIDIA variant of the AMI for GPU instance types.
    ami_alias: str = Field("al2023@latest", pattern=r"^al2023@(latest|v\d{8})$")
    capacity_types: list[CapacityType] = Field(default_factory=_on_demand, min_length=1)
    gpu_volume_gib: int = Field(500, ge=50, alias="gpuVolumeGiB")


class DevicePlugin(_Model):
    chart_version: str = "0.20.0"


class _Stack(_Model):
    cloud: Literal["aws", "gcp"]
    cluster_name: str
    region: str
    gpu_types: list[str] = Field(min_length=1)
    api_allowed_cidrs: list[Cidr] = Field(min_length=1)
    operator: Operator
    deletion_protection: bool = True
    registry_credentials: SecretStr | None = None

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", v):
            raise ValueError(
                f"{v!r} is not allowed; use 3-32 characters: lowercase letters, digits and '-', "
                "starting with a letter (it names the cluster, queue and cloud resources)"
            )
        return v

    @field_validator("gpu_types")
    @classmethod
    def _known_gpus(cls, v: list[str], info: ValidationInfo) -> list[str]:
        unknown = [g for g in v if g not in ACCELERATORS_BY_NAME]
        if unknown:
            allowed = ", ".join(sorted(ACCELERATORS_BY_NAME))
            raise ValueError(f"unknown GPU type(s) {unknown}; allowed values: {allowed}")
        if len(set(v)) != len(v):
            raise ValueError("GPU types must not repeat")
        cloud, region = info.data.get("cloud"), info.data.get("region")
        if cloud and region:  # absent when they failed validation themselves
            offered = regions.offer(cloud, region).gpus
            missing = [g for g in v if g not in offered]
            if missing:
                allowed = ", ".join(sorted(offered))
                raise ValueError(
                    f"{missing} not offered in {cloud} {region} (see infra/modelplane_infra/"
                    f"regions.py); allowed values for {region}: {allowed}"
                )
        return v

    @property
    def capacity_provider(self) -> str:
        return CAPACITY_PROVIDER[self.cloud]


def _check_region(cloud: str, region: str) -> str:
    if region not in regions.REGIONS[cloud]:
        allowed = ", ".join(sorted(regions.REGIONS[cloud]))
        raise ValueError(f"{region!r} is not a supported {cloud} region; allowed values: {allowed}")
    return region


class AwsStack(_Stack):
    cloud: Literal["aws"]
    kubernetes_version: K8sVersion
    network: AwsNetwork = AwsNetwork()
    system_nodes: AwsSystemNodes = AwsSystemNodes()
    karpenter: Karpenter = Karpenter()
    nvidia_device_plugin: DevicePlugin = DevicePlugin()
    #: IAM roles/users granted cluster-admin through EKS access entries.
    admin_principal_arns: list[
        Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/.+$")]
    ] = Field(default_factory=list)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        return _check_region("aws", v)

    @model_validator(mode="after")
    def _zones_in_region(self) -> AwsStack:
        zones = self.network.availability_zones
        if zones is not None:
            bad = [z for z in zones if not re.fullmatch(rf"{re.escape(self.region)}[a-z]", z)]
            if bad or len(zones) < 2 or len(set(zones)) != len(zones):
                raise ValueError(
                    f"network.availabilityZones: need 2 or more distinct zones of {self.region} "
                    f"(e.g. {self.region}a, {self.region}b); got {zones}"
                )
        return self

    @property
    def zone_count(self) -> int:
        zones = self.network.availability_zones
        return len(zones) if zones else self.network.zone_count


class GcpNetwork(_Model):
    node_cidr: Cidr = "10.10.0.0/20"
    pod_cidr: Cidr = "10.16.0.0/14"
    service_cidr: Cidr = "10.20.0.0/20"
    #: The control plane's private range; must be a /28.
    master_cidr: Cidr = "172.16.0.0/28"

    @field_validator("master_cidr")
    @classmethod
    def _slash28(cls, v: str) -> str:
        if ipaddress.ip_network(v).prefixlen != 28:
            raise ValueError(f"{v} must be a /28")
        return v


class GcpSystemNodes(_Model):
    machine_type: str = "e2-standard-4"
    min_nodes_per_zone: int = Field(1, ge=0)
    max_nodes_per_zone: int = Field(2, ge=1)
    disk_gib: int = Field(100, ge=20, alias="diskGiB")


class GcpGpuNodes(_Model):
    max_nodes: int = Field(2, ge=1, le=100)
    spot: bool = False
    driver_version: Literal["DEFAULT", "LATEST"] = "LATEST"
    disk_gib: int = Field(500, ge=50, alias="diskGiB")


class GcpStack(_Stack):
    cloud: Literal["gcp"]
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    kubernetes_version: K8sVersion | None = None
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    network: GcpNetwork = GcpNetwork()
    system_nodes: GcpSystemNodes = GcpSystemNodes()
    gpu_nodes: GcpGpuNodes = GcpGpuNodes()

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        return _check_region("gcp", v)


def _known_gpu_types(v: list[str]) -> list[str]:
    unknown = [g for g in v if g not in ACCELERATORS_BY_NAME]
    if unknown:
        allowed = ", ".join(sorted(ACCELERATORS_BY_NAME))
        raise ValueError(f"unknown GPU type(s) {unknown}; allowed values: {allowed}")
    if len(set(v)) != len(v):
        raise ValueError("GPU types must not repeat")
    return v


class LocalStack(_Model):
    """An existing cluster reached through a kubeconfig (the local GPU cluster first of all):
    only the Kubernetes layer, the same `ModelplaneInstall` the EKS and GKE stacks use."""

    cloud: Literal["local"]
    cluster_name: str = Field("local", pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
    #: Path of the kubeconfig file (`~` is expanded); unset: the provider's default
    #: ($KUBECONFIG, else ~/.kube/config).
    kubeconfig: str | None = None
    #: The kubeconfig context; unset: its current context.
    context: str | None = None
    #: AcceleratorClasses to create; the cluster's GPU nodes must carry their node labels.
    gpu_types: Annotated[list[str], AfterValidator(_known_gpu_types)] = Field(min_length=1)
    operator: Operator
    registry_credentials: SecretStr | None = None

    @property
    def capacity_provider(self) -> str:
        return CAPACITY_PROVIDER[self.cloud]


StackConfig = AwsStack | GcpStack | LocalStack
_MODELS: dict[str, type[AwsStack] | type[GcpStack] | type[LocalStack]] = {
    "aws": AwsStack,
    "gcp": GcpStack,
    "local": LocalStack,
}


def _key(loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(p) for p in loc)
    return f"{NAMESPACE}:{path}" if path else NAMESPACE


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or n for n, f in model.model_fields.items())


def validate(raw: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> StackConfig:
    """Validate raw config (keys without the namespace) into a stack model.

    `secret_keys` names the keys Pulumi holds as secrets; a key in SECRET_KEYS that is set in
    plain text is refused.
    """
    cloud = raw.get("cloud")
    if cloud not in CLOUDS:
        got = "missing" if cloud is None else f"{cloud!r} is not allowed"
        raise ConfigError([f"{NAMESPACE}:cloud: {got}; allowed values: {', '.join(CLOUDS)}"])
    model = _MODELS[cloud]
    problems: list[str] = []
    secrets = set(secret_keys)
    for key in sorted(SECRET_KEYS & set(raw)):
        if key not in secrets:
            problems.append(
                f"{NAMESPACE}:{key}: must be stored as a secret "
                f"(pulumi config set --secret {key} ...), not in plain text"
            )
    unknown = sorted(set(raw) - set(_allowed_keys(model)))
    for key in unknown:
        problems.append(
            f"{NAMESPACE}:{key}: unknown key for cloud {cloud}; allowed keys: "
            + ", ".join(_allowed_keys(model))
        )
    known = {k: v for k, v in raw.items() if k not in unknown}
    try:
        config = model.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required, but not set"
            elif err["type"] == "literal_error":
                msg = f"{err['input']!r} is not allowed; {msg[0].lower()}{msg[1:]}"
            problems.append(f"{_key(err['loc'])}: {msg}")
    if problems:
        raise ConfigError(problems)
    return config


def _parse(value: Any) -> Any:
    """Pulumi hands structured values over as JSON text; scalars stay strings."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        return json.loads(value)
    return value


def load(
    get_all: Callable[[], Mapping[str, Any]] | None = None,
    is_secret: Callable[[str], bool] | None = None,
) -> StackConfig:
    """Read and validate this stack's `modelplane:*` config from the Pulumi runtime."""
    from pulumi.runtime import config as runtime_config

    def _runtime_all() -> Mapping[str, Any]:
        return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}

    everything = (get_all or _runtime_all)()
    secret = is_secret or (
        lambda k: (
            runtime_config.is_config_secret(k) or k in runtime_config.get_config_secret_keys_env()
        )
    )
    prefix = f"{NAMESPACE}:"
    raw = {
        key: value if key in SECRET_KEYS else _parse(value)  # secrets are opaque strings
        for key, value in (
            (k.removeprefix(prefix), v) for k, v in everything.items() if k.startswith(prefix)
        )
    }
    secrets = [k.removeprefix(prefix) for k in everything if k.startswith(prefix) and secret(k)]
    return validate(raw, secrets)

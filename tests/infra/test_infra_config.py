"""Stack configuration: the committed stack files validate, and bad config fails early with the
key and the values it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pulumi_harness import FIXTURE_CRDS, STACKS, run_program, run_stack, stack_config

from modelplane.catalog.accelerators import ACCELERATORS_BY_NAME
from modelplane_infra import config, regions
from modelplane_infra.config import AwsStack, ConfigError, GcpStack
from modelplane_infra.crds import CrdError, load_crds


def raw(stack: str) -> dict[str, Any]:
    prefix = "modelplane:"
    return {k[len(prefix) :]: v for k, v in stack_config(stack).items() if k.startswith(prefix)}


def problems(data: dict[str, Any], secret_keys: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as err:
        config.validate(data, secret_keys)
    return str(err.value)


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stack_files_validate_and_match_their_names(stack: str) -> None:
    cfg = config.validate(raw(stack))
    cloud, _, region = stack.partition("-")
    assert cfg.cloud == cloud
    assert cfg.region == region
    # The provider's own region key agrees with ours.
    assert stack_config(stack)[f"{cloud}:region"] == region


@pytest.mark.parametrize(
    ("stack", "region", "allowed"),
    [
        ("aws-us-east-1", "us-east-9", "eu-west-1, us-east-1, us-east-2, us-west-2"),
        ("gcp-us-central1", "us-centralX", "europe-west4, us-central1"),
    ],
)
def test_unknown_region_names_field_and_allowed_values(
    stack: str, region: str, allowed: str
) -> None:
    msg = problems({**raw(stack), "region": region})
    assert f"modelplane:region: {region!r} is not a supported" in msg
    assert f"allowed values: {allowed}" in msg


def test_gpu_not_offered_in_region_names_field_and_region_allowed_values() -> None:
    data = {**raw("aws-us-west-2"), "gpuTypes": ["nvidia-h200-141gb"]}
    msg = problems(data)
    assert "modelplane:gpuTypes: ['nvidia-h200-141gb'] not offered in aws us-west-2" in msg
    allowed = ", ".join(sorted(regions.offer("aws", "us-west-2").gpus))
    assert f"allowed values for us-west-2: {allowed}" in msg
    # GCP has no A10G machine type at all.
    msg = problems({**raw("gcp-us-central1"), "gpuTypes": ["nvidia-a10g-24gb"]})
    assert "not offered in gcp us-central1" in msg


def test_unknown_gpu_type_lists_the_catalog() -> None:
    msg = problems({**raw("aws-us-east-1"), "gpuTypes": ["nvidia-rtx-9090"]})
    assert "modelplane:gpuTypes: unknown GPU type(s) ['nvidia-rtx-9090']" in msg
    assert ", ".join(sorted(ACCELERATORS_BY_NAME)) in msg


def test_missing_values_are_named() -> None:
    data = raw("aws-us-east-1")
    del data["kubernetesVersion"]
    data["operator"] = {"image": {"repository": "example.com/mp"}}
    msg = problems(data)
    assert "modelplane:kubernetesVersion: required, but not set" in msg
    assert "modelplane:operator.image.tag: required, but not set" in msg
    gcp = raw("gcp-us-central1")
    del gcp["project"]
    assert "modelplane:project: required, but not set" in problems(gcp)


@pytest.mark.parametrize(("cloud", "expected"), [(None, "missing"), ("azure", "'azure'")])
def test_cloud_must_be_aws_gcp_or_local(cloud: str | None, expected: str) -> None:
    data = raw("aws-us-east-1")
    data.pop("cloud")
    if cloud:
        data["cloud"] = cloud
    msg = problems(data)
    assert "modelplane:cloud:" in msg
    assert expected in msg
    assert "allowed values: aws, gcp, local" in msg


def test_misspelled_key_is_refused_with_the_allowed_keys() -> None:
    msg = problems({**raw("aws-us-east-1"), "gpuType": "nvidia-l4-24gb"})
    assert "modelplane:gpuType: unknown key for cloud aws" in msg
    assert "gpuTypes" in msg
    # GCP-only keys are not valid on AWS.
    assert "modelplane:gpuNodes: unknown key" in problems({**raw("aws-us-east-1"), "gpuNodes": {}})


def test_enum_like_values_list_what_is_allowed() -> None:
    data = raw("aws-us-east-1")
    data["operator"] = {**data["operator"], "logLevel": "LOUD"}
    data["karpenter"] = {**data["karpenter"], "capacityTypes": ["preemptible"]}
    msg = problems(data)
    assert "modelplane:operator.logLevel: 'LOUD' is not allowed" in msg
    assert "'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in msg
    assert "modelplane:karpenter.capacityTypes.0: 'preemptible' is not allowed" in msg


def test_network_values_are_checked() -> None:
    data = raw("aws-us-east-1")
    data["apiAllowedCidrs"] = ["10.0.0.0/33"]
    assert "modelplane:apiAllowedCidrs.0: '10.0.0.0/33' is not a valid CIDR" in problems(data)
    data = raw("aws-us-east-1")
    data["network"] = {"availabilityZones": ["us-west-2a", "us-east-1b"]}
    msg = problems(data)
    assert "network.availabilityZones: need 2 or more distinct zones of us-east-1" in msg
    data["network"] = {"zoneCount": 1}
    assert "modelplane:network.zoneCount" in problems(data)


def test_secrets_only_from_pulumi_secrets() -> None:
    data = {**raw("aws-us-east-1"), "registryCredentials": '{"auths": {}}'}
    msg = problems(data)
    assert "modelplane:registryCredentials: must be stored as a secret" in msg
    cfg = config.validate(data, secret_keys=["registryCredentials"])
    assert cfg.registry_credentials is not None
    assert '{"auths"' not in repr(cfg)  # never printed


def test_load_reads_pulumi_runtime_config_and_secret_flags() -> None:
    everything = {
        f"modelplane:{k}": v if isinstance(v, str) else __import__("json").dumps(v)
        for k, v in raw("gcp-us-central1").items()
    }
    everything["gcp:project"] = "ignored-other-namespace"
    everything["modelplane:registryCredentials"] = "{}"
    cfg = config.load(lambda: everything, lambda k: k == "modelplane:registryCredentials")
    assert isinstance(cfg, GcpStack)
    assert cfg.gpu_nodes.max_nodes == 4
    assert cfg.gpu_types == ["nvidia-l4-24gb", "nvidia-h100-80gb"]
    with pytest.raises(ConfigError, match="must be stored as a secret"):
        config.load(lambda: everything, lambda k: False)


def test_bad_config_fails_before_any_resource_is_declared() -> None:
    from modelplane_infra.program import main

    seen: list[ConfigError] = []

    def program() -> None:
        try:
            main(FIXTURE_CRDS)
        except ConfigError as exc:
            seen.append(exc)

    cfg = stack_config("aws-us-east-1")
    cfg["modelplane:gpuTypes"] = ["nvidia-h200-141gb"]
    graph = run_program("aws-us-east-1", program, cfg)
    assert len(seen) == 1
    assert "modelplane:gpuTypes" in str(seen[0])
    assert graph.resources == []
    # And the error propagates out of a real program run.
    with pytest.raises(ConfigError, match="modelplane:region"):
        run_stack("aws-us-east-1", {"modelplane:region": "mars-north-1"})


def test_missing_crds_fail_before_any_resource(tmp_path: Path) -> None:
    with pytest.raises(CrdError, match="no CustomResourceDefinitions found"):
        load_crds(tmp_path)
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(
        CrdError, match=r"expected apiextensions\.k8s\.io/v1 CustomResourceDefinition"
    ):
        load_crds(tmp_path)
    (tmp_path / "x.yaml").unlink()
    with pytest.raises(CrdError):
        run_stack("aws-us-east-1", crds=tmp_path)


def test_crd_loader_reads_fixture_and_repo_layout() -> None:
    crds = load_crds(FIXTURE_CRDS)
    assert [c["metadata"]["name"] for c in crds] == [
        "acceleratorclasses.modelplane.io",
        "modeldeployments.modelplane.io",
    ]


def test_models_are_the_right_type_per_cloud() -> None:
    assert isinstance(config.validate(raw("aws-us-east-1")), AwsStack)
    assert config.validate(raw("aws-us-east-1")).capacity_provider == "karpenter"
    assert config.validate(raw("gcp-us-central1")).capacity_provider == "static"

"""The Helm chart without helm: metadata, generated files, values and schema, RBAC table, CRDs.

Everything here reads the chart's files and the Python models they are generated from, so it
runs without the Go-built binaries. Rendering with `helm template` / `helm lint` (per mode and
provider, RBAC == permissions.py, the values schema as helm applies it) is in
tests/integration/test_chart_render.py. The generated chart files (values.yaml,
values.schema.json, files/*) must match `modelplane.chartvalues`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from modelplane import __version__, chartvalues, permissions

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelplane"
REGENERATE = "run `uv run python -m modelplane.chartvalues` and commit the result"

#: (--set value, where the schema complains, its message): helm's half is in
#: tests/integration/test_chart_render.py, the pydantic model's half below.
BAD_VALUES = [
    ("capacityProvider=gke", "/capacityProvider", "value must be one of 'karpenter', 'static'"),
    ("resyncIntervalSeconds=-5", "/resyncIntervalSeconds", "exclusiveMinimum"),
    ("resyncIntervalSeconds=0", "/resyncIntervalSeconds", "exclusiveMinimum"),
    ("logLevel=TRACE", "/logLevel", "value must be one of"),
    ("watchNamespaces={Team_A}", "/watchNamespaces/0", "does not match pattern"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy", "value must be one of"),
    ("servicemonitor=true", "", "additional properties 'servicemonitor' not allowed"),
    ("acceleratorClasses[0].name=x", "/acceleratorClasses/0", "missing property 'spec'"),
]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__ == chartvalues.APP_VERSION
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["apiVersion"] == "v2"


def test_one_resource_kind_per_template_named_by_kind() -> None:
    for tpl in (CHART / "templates").glob("*.yaml"):
        kinds = set(re.findall(r"^kind: (\w+)", tpl.read_text(), flags=re.M))
        if tpl.name == "customresourcedefinition.yaml":
            kinds = {"CustomResourceDefinition"}  # rendered from files/crds
        assert len(kinds) == 1, (tpl.name, kinds)
        assert tpl.stem == kinds.pop().lower(), tpl.name


def test_generated_chart_files_are_up_to_date() -> None:
    stale = chartvalues.stale_files(REPO)
    assert not stale, f"stale generated chart files {stale}: {REGENERATE}"


def test_crd_copies_are_identical_to_generated_crds() -> None:
    repo_crds = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart_crds = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert repo_crds, "no CRDs in crds/"
    assert chart_crds == repo_crds, REGENERATE


def test_values_yaml_is_the_models_defaults_and_validates() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    model = chartvalues.ChartValues.model_validate(values)
    assert model.model_dump(by_alias=True, mode="json") == values
    assert values["capacityProvider"] == "static"
    assert values["installCRDs"] is True
    assert values["defaultAcceleratorClasses"] is True
    assert values["serviceMonitor"] is False


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [
        (i, m.group(1), m.group(2))
        for i, line in enumerate(lines)
        if (m := re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line))
    ]
    assert {k for _, ind, k in keys if not ind} == {
        f.alias or n for n, f in chartvalues.ChartValues.model_fields.items()
    }
    for i, _, key in keys:
        if key in {"cpu", "memory"}:  # entries of resources.requests/limits maps
            continue
        j = i - 1
        while (
            j >= 0
            and lines[j].lstrip().startswith("#")
            and not re.match(rf"^\s*# {key} -- ", lines[j])
        ):
            j -= 1
        assert j >= 0 and re.match(rf"^\s*# {key} -- \S", lines[j]), f"{key} has no comment"


def test_every_schema_property_has_a_description() -> None:
    schema = chartvalues.values_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    own = {"ChartValues", "Image", "Resources", "LocalObjectReference", "ExtraAcceleratorClass"}
    checked = 0
    for name, node in [("ChartValues", schema), *schema["$defs"].items()]:
        if name not in own:
            continue
        for prop, sub in node["properties"].items():
            assert sub.get("description"), f"{name}.{prop} has no description"
            checked += 1
    assert checked >= 20
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(("value", "where", "message"), BAD_VALUES)
def test_bad_values_fail_the_values_model(value: str, where: str, message: str) -> None:
    """The pydantic model the schema is generated from rejects what helm's schema check does."""
    key, _, raw = value.partition("=")
    parsed = yaml.safe_load(raw.replace("{", "[").replace("}", "]"))
    data: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    node: Any = data
    parts = re.split(r"\.|\[(\d+)\]\.?", key)
    path = [p for p in parts if p]
    for i, part in enumerate(path[:-1]):
        nxt: Any = [] if path[i + 1].isdigit() else {}
        if part.isdigit():
            node.append(nxt)
        else:
            node = node.setdefault(part, nxt)
            continue
        node = nxt
    node[path[-1]] = parsed
    with pytest.raises(pydantic.ValidationError):
        chartvalues.ChartValues.model_validate(data)


def test_permissions_file_is_the_twin_of_permissions_py() -> None:
    table = yaml.safe_load((CHART / "files" / "permissions.yaml").read_text())["rules"]
    assert len(table) == len(permissions.PERMISSIONS)
    for row, p in zip(table, permissions.PERMISSIONS, strict=True):
        assert row["apiGroups"] == [p.group] and row["resources"] == [p.resource]
        assert tuple(row["verbs"]) == p.verbs and row["namespaced"] == p.namespaced
        assert row["operatorNamespace"] == p.operator_namespace


def test_secrets_are_read_by_name_and_written_only_in_the_operator_namespace() -> None:
    secrets = [p for p in permissions.PERMISSIONS if p.resource == "secrets"]
    # Read: get by name (the Secrets tenants reference), never list or watch.
    assert [(p.verbs, p.operator_namespace) for p in secrets if not p.operator_namespace] == [
        (("get",), False)
    ]
    # Write: the Serverless backends' mirrored credentials, in the operator's namespace only.
    assert [p.verbs for p in secrets if p.operator_namespace] == [("create", "patch", "delete")]
    assert all(p.namespaced and "mirror" in p.why for p in secrets)
    assert not [p for p in permissions.PERMISSIONS if p.resource == "configmaps"]
    # Nothing else is limited to the operator's namespace but the leader-election Lease.
    assert {p.resource for p in permissions.PERMISSIONS if p.operator_namespace} == {
        "secrets",
        "leases",
    }


def test_flux_helmrelease_values_are_valid_chart_values() -> None:
    path = REPO / "examples" / "gitops" / "flux" / "helmrelease.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    [release] = [d for d in docs if d["kind"] == "HelmRelease"]
    assert release["spec"]["chart"]["spec"]["chart"] == "charts/modelplane"
    chartvalues.ChartValues.model_validate(release["spec"]["values"])


def test_gateway_permissions_file_is_the_twin_and_reads_no_secrets() -> None:
    table = yaml.safe_load((CHART / "files" / "gateway-permissions.yaml").read_text())["rules"]
    assert len(table) == len(permissions.GATEWAY_PERMISSIONS)
    for row, p in zip(table, permissions.GATEWAY_PERMISSIONS, strict=True):
        assert (row["apiGroups"], row["resources"], row["verbs"]) == (
            [p.group],
            [p.resource],
            list(p.verbs),
        )
    # keys are ApiKeys (salted hashes): the gateway reads no Secrets and no ConfigMaps
    resources = {p.resource for p in permissions.GATEWAY_PERMISSIONS}
    assert resources == {"modeldeployments", "apikeys", "pods"}
    writes = {v for p in permissions.GATEWAY_PERMISSIONS for v in p.verbs} - {"get", "list"}
    assert writes == {"patch"}  # only the demand annotations


def test_gateway_values_default_off_and_validated() -> None:
    v = chartvalues.ChartValues()
    assert v.gateway.enabled is False and v.gateway.replicas == 2
    with pytest.raises(pydantic.ValidationError):
        chartvalues.ChartValues.model_validate({"gateway": {"replicas": 0}})

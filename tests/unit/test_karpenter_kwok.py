"""The Karpenter test bed's instance types and pin (no processes started)."""

from __future__ import annotations

from pathlib import Path

from modelplane.catalog import accelerators as acc
from modelplane.chartvalues import karpenter_requirements
from modelplane_testbed.karpenter import instance_types, node_class_ref
from modelplane_testbed.localcluster.binaries import versions

REPO = Path(__file__).resolve().parents[2]


def _offering_labels(it: dict[str, object], zone: str) -> dict[str, str]:
    for off in it["offerings"]:  # type: ignore[attr-defined]
        reqs = {r["key"]: r["values"] for r in off["Requirements"]}
        if reqs["topology.kubernetes.io/zone"] == [zone]:
            assert all(len(v) == 1 for v in reqs.values())  # single values become node labels
            return {k: v[0] for k, v in reqs.items()}
    raise AssertionError(f"no offering in {zone}")


def test_every_catalog_shape_is_an_instance_type_with_its_gpus() -> None:
    types = {t["name"]: t for t in instance_types(["z-a", "z-b"], "r")}
    for a in acc.DEFAULT_ACCELERATORS:
        for s in a.shapes:
            t = types[s.name]
            assert t["resources"][acc.GPU_RESOURCE] == str(s.gpus)
            assert t["resources"]["cpu"] == str(s.vcpu)
            assert t["resources"]["memory"] == f"{s.memory_gib}Gi"
            assert len(t["offerings"]) == 2
            labels = _offering_labels(t, "z-b")
            assert labels[acc.LABEL_GPU_PRODUCT] == a.gpu_product
            assert labels[acc.LABEL_GPU_MEMORY] == str(a.memory_mib)
            assert labels["karpenter.sh/capacity-type"] == "on-demand"
            # the NodePool template sets the class label; the instance type is its own key
            assert acc.LABEL_ACCELERATOR_CLASS not in labels
            assert acc.LABEL_INSTANCE_TYPE not in labels


def test_the_charts_nodepool_requirements_select_exactly_the_classes_shapes() -> None:
    """Each default class's Karpenter requirements (as the chart renders them) match the
    instance types of its own shapes and no other."""
    types = instance_types(["z"], "r")
    for a in acc.DEFAULT_ACCELERATORS:
        reqs = karpenter_requirements(a)
        matched = set()
        for t in types:
            labels = {
                **_offering_labels(t, "z"),
                acc.LABEL_INSTANCE_TYPE: t["name"],
                "kubernetes.io/arch": t["architecture"],
            }
            if all(r["operator"] == "In" and labels.get(r["key"]) in r["values"] for r in reqs):
                matched.add(t["name"])
        assert matched == {s.name for s in a.shapes}, a.name


def test_node_class_ref_is_the_kwok_provider_kind() -> None:
    assert node_class_ref("x") == {
        "group": "karpenter.kwok.sh",
        "kind": "KWOKNodeClass",
        "name": "x",
    }


def test_wrapper_module_pins_karpenter_and_build_script_knows_it() -> None:
    gomod = (REPO / "tools/karpenter-kwok/go.mod").read_text()
    assert f"require sigs.k8s.io/karpenter v{versions()['KARPENTER_VERSION']}" in gomod
    build = (REPO / "tools/build.sh").read_text()
    assert "karpenter-kwok) done_or_build karpenter-kwok" in build
    assert "sigs.k8s.io/karpenter/kwok" in build

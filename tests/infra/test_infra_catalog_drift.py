"""What Pulumi puts on GPU capacity must agree with the operator's catalog and API."""

from __future__ import annotations

import pytest

from modelplane.api import v1alpha1
from modelplane.catalog import accelerators as catalog
from modelplane_infra import gpu, regions
from modelplane_infra.gpu import NodeClassRef


def test_taint_and_toleration_are_the_catalogs() -> None:
    assert gpu.gpu_taint() == {
        "key": catalog.GPU_TAINT_KEY,
        "value": catalog.GPU_TAINT_VALUE,
        "effect": catalog.GPU_TAINT_EFFECT,
    }
    assert gpu.gpu_toleration() == {
        "key": catalog.GPU_TAINT_KEY,
        "operator": "Exists",
        "effect": catalog.GPU_TAINT_EFFECT,
    }
    gke = gpu.gke_gpu_taint()
    assert (gke["key"], gke["value"]) == (catalog.GPU_TAINT_KEY, catalog.GPU_TAINT_VALUE)
    assert gke["effect"] == gpu.GKE_TAINT_EFFECTS[catalog.GPU_TAINT_EFFECT]


@pytest.mark.parametrize("acc", catalog.DEFAULT_ACCELERATORS, ids=lambda a: a.name)
def test_every_catalog_gpu_maps_to_pulumi_labels_and_a_valid_accelerator_class(
    acc: catalog.Accelerator,
) -> None:
    ref = NodeClassRef("karpenter.k8s.aws", "EC2NodeClass", "modelplane-gpu")
    spec = gpu.accelerator_class_spec(
        acc,
        shapes=acc.shapes,
        instance_types=[s.name for s in acc.shapes],
        karpenter=(ref, ["on-demand"]),
    )
    # The operator's own API type accepts what Pulumi creates (extra fields are forbidden).
    parsed = v1alpha1.AcceleratorClassSpec.model_validate(spec)
    assert parsed.gpu_product == acc.gpu_product
    assert parsed.node_selector == {catalog.LABEL_ACCELERATOR_CLASS: acc.name}
    assert parsed.gpus_per_node == acc.max_gpus_per_node
    v1alpha1.AcceleratorClass.model_validate(
        {
            "apiVersion": gpu.ACCELERATOR_CLASS_API_VERSION,
            "kind": gpu.ACCELERATOR_CLASS_KIND,
            "metadata": {"name": acc.name},
            "spec": spec,
        }
    )
    reqs = {r["key"]: r["values"] for r in spec["provisioning"]["karpenter"]["requirements"]}
    assert reqs[gpu.KARPENTER_GPU_NAME] == list(acc.karpenter_values)
    assert reqs[catalog.LABEL_INSTANCE_TYPE] == [s.name for s in acc.shapes]
    for shape in regions.gcp_shapes(acc.name):
        labels = gpu.gke_node_labels(acc, shape)
        assert labels[catalog.LABEL_GPU_PRODUCT] == acc.gpu_product
        assert labels[catalog.LABEL_GPU_MEMORY] == str(acc.memory_mib)
        assert labels[catalog.LABEL_GPU_COUNT] == str(shape.gpus)
        assert labels[catalog.LABEL_GPU_FAMILY] == acc.gpu_family
        assert labels[catalog.LABEL_ACCELERATOR_CLASS] == acc.name
        assert catalog.LABEL_INSTANCE_TYPE not in labels


def test_region_table_only_names_catalog_gpus_and_shapes() -> None:
    for cloud, offers in regions.REGIONS.items():
        for region, offer in offers.items():
            assert offer.gpus, region
            for name, where in offer.gpus.items():
                acc = catalog.ACCELERATORS_BY_NAME[name]
                if cloud == "aws":
                    assert set(where) <= {s.name for s in acc.shapes}
                else:
                    assert name in gpu.GKE_ACCELERATOR_TYPES
                    assert all(z.startswith(f"{region}-") for z in where)
    gcp_capable = {a.name for a in catalog.DEFAULT_ACCELERATORS if regions.gcp_shapes(a.name)}
    assert set(gpu.GKE_ACCELERATOR_TYPES) == gcp_capable

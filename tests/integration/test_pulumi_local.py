"""`pulumi up` for real: the infra program's Kubernetes layer on the local cluster.

The Pulumi CLI (engine, file backend) and the Kubernetes provider plugin are the ones
tools/build.sh builds from the Go module proxy; nothing is downloaded at run time. The program
is infra/'s own (`modelplane_infra.program.main`, a `cloud: local` stack: the same
`ModelplaneInstall` the EKS and GKE stacks use), run through the Automation API, whose
in-process language server stands in for the `pulumi-language-python` plugin the proxy does not
serve. The operator's pod of the release Pulumi installed is played by the test bed, as for a
`helm install`.

The AcceleratorClasses the stack creates are cluster-scoped and may be the session's chart
release's already: the test takes them out of the way and puts them back afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.localcluster.binaries import cache_dir, versions
from modelplane_testbed.platform import CHART, Platform
from tests.helpers import REPO, wait_for

pytestmark = [
    pytest.mark.integration,
    # The provider SDKs warn about their own deprecated modules when the program imports them.
    *(
        pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{sdk}.*")
        for sdk in ("pulumi", "pulumi_aws", "pulumi_gcp", "pulumi_kubernetes")
    ),
]

INFRA = REPO / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

from pulumi import automation as auto  # noqa: E402

STACK = "local-test"
RELEASE = "mp-pulumi"
GPU_TYPES = ["nvidia-l4-24gb", "nvidia-h100-80gb"]
GROUP, VERSION = "modelplane.io", "v1alpha1"


def pulumi_root() -> Path:
    """The cached build of tools/build.sh pulumi (bin/pulumi, bin/pulumi-resource-kubernetes)."""
    v = versions()
    root = cache_dir() / "bin" / f"pulumi-{v['PULUMI_VERSION']}-k8s{v['PULUMI_KUBERNETES_VERSION']}"
    assert (root / ".complete").exists(), (
        f"the Pulumi CLI and Kubernetes provider are not built ({root} is missing); "
        "run `bash tools/build.sh pulumi` first (about 10 min cold)"
    )
    return root


def stack_config(cluster: LocalCluster, log_level: str) -> dict[str, Any]:
    """infra/Pulumi.local.yaml, pointed at this session's cluster and its own release."""
    doc = yaml.safe_load((INFRA / "Pulumi.local.yaml").read_text())
    cfg: dict[str, Any] = doc["config"]
    cfg["modelplane:kubeconfig"] = str(cluster.kubeconfig)
    cfg["modelplane:gpuTypes"] = GPU_TYPES
    op = cfg["modelplane:operator"]
    op.update(chart=str(CHART), release=RELEASE, namespace=RELEASE, logLevel=log_level)
    return {"config": cfg}


def program() -> None:
    from modelplane_infra.program import main

    main()


@pytest.fixture
def stack(cluster: LocalCluster, tmp_path: Path) -> Iterator[auto.Stack]:
    """A `local` stack of the infra program in a file backend under tmp_path."""
    root = pulumi_root()
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "state").mkdir()
    env = {
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "local-test-only",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The provider plugin is found on PATH (no download, no `plugin install`).
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (work / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack_config(cluster, "INFO")))
    ws = auto.LocalWorkspace(
        work_dir=str(work),
        pulumi_command=auto.PulumiCommand(root=str(root)),
        env_vars=env,
        project_settings=auto.ProjectSettings(name="modelplane", runtime="python"),
        program=program,
    )
    st = auto.Stack.create(STACK, ws)
    try:
        yield st
    finally:
        if st.info() is not None and st.export_stack().deployment.get("resources"):
            st.destroy(on_output=print)


@pytest.fixture
def classes_out_of_the_way(cluster: LocalCluster) -> Iterator[None]:
    """The stack's AcceleratorClasses may exist (the session's chart release): remove them for
    the test, apply them back afterwards."""
    saved = []
    for name in GPU_TYPES:
        out = cluster.kubectl("get", "accel", name, "-o", "json", check=False)
        if out:
            obj = json.loads(out)
            meta = obj["metadata"]
            obj["metadata"] = {k: meta[k] for k in ("name", "labels", "annotations") if k in meta}
            obj.pop("status", None)
            saved.append(obj)
            cluster.kubectl("delete", "accel", name, "--wait=true")
    yield
    for name in GPU_TYPES:
        cluster.kubectl("delete", "accel", name, "--ignore-not-found", check=False)
    if saved:
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(saved),
        )  # fmt: skip


def changes(summary: Any) -> dict[str, int]:
    return {k: v for k, v in (summary.resource_changes or {}).items() if k != "same" and v}


def test_pulumi_up_preview_update_destroy_on_the_local_cluster(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    platform: Platform,
    stack: auto.Stack,
    classes_out_of_the_way: None,
) -> None:
    apps = client.AppsV1Api(api)
    ext = client.ApiextensionsV1Api(api)
    objs = client.CustomObjectsApi(api)
    log: list[str] = []

    # 1. pulumi up: CRDs, namespace, the chart as a Helm release, AcceleratorClasses.
    up = stack.up(on_output=log.append)
    assert up.summary.result == "succeeded", "\n".join(log)
    created = changes(up.summary)
    assert set(created) == {"create"}, created
    # 1 provider + 2 components + 2 CRDs + namespace + release + 2 classes (+ the stack).
    assert created["create"] >= 9, created
    assert up.outputs["release"].value == RELEASE
    crd_uids = {c: ext.read_custom_resource_definition(c).metadata.uid for c in _crds()}
    for c in crd_uids:
        labels = ext.read_custom_resource_definition(c).metadata.labels or {}
        assert labels.get("app.kubernetes.io/managed-by") == "pulumi", labels
    for name in GPU_TYPES:
        spec = objs.get_cluster_custom_object(GROUP, VERSION, "acceleratorclasses", name)["spec"]
        assert spec["nodeSelector"] == {"modelplane.io/accelerator-class": name}

    # 2. The operator's Deployment is Available (helm waited for it: atomic), and the operator
    # (played by the test bed with the release's environment and ServiceAccount) brings an
    # example ModelDeployment to Ready.
    dep = apps.read_namespaced_deployment(RELEASE, RELEASE)
    assert dep.status.available_replicas == 1
    rel = platform.adopt(RELEASE, RELEASE)
    assert rel.values_yaml and "capacityProvider: static" in rel.values_yaml
    md = _example(namespace)
    with platform.operator(rel, [namespace], {"resyncIntervalSeconds": "5"}) as op:
        env = op.env
        assert env["MODELPLANE_CAPACITY_PROVIDER"] == "static", env
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(md))
        wait_for(
            lambda: _phase(objs, namespace, md["metadata"]["name"]) == "Ready",
            timeout=180,
            what="the example ModelDeployment Ready",
        )
        ready = _get_md(objs, namespace, md["metadata"]["name"])
        assert ready["status"]["accelerator"]["class"] in GPU_TYPES
        md_uid = ready["metadata"]["uid"]

    # 3. A second preview plans nothing.
    pre = stack.preview(diff=True)
    assert {k for k, v in pre.change_summary.items() if v} == {"same"}, pre.change_summary

    # 4. A values change is an in-place update of the release only: no replace, the CRDs and
    # the ModelDeployment (the operator's data) untouched.
    (Path(stack.workspace.work_dir) / f"Pulumi.{STACK}.yaml").write_text(
        yaml.safe_dump(stack_config(cluster, "DEBUG"))
    )
    log.clear()
    upd = stack.up(on_output=log.append)
    assert upd.summary.result == "succeeded", "\n".join(log)
    assert changes(upd.summary) == {"update": 1}, changes(upd.summary)
    values = platform.helm("get", "values", RELEASE, "-n", RELEASE, "-o", "json")
    assert json.loads(values)["logLevel"] == "DEBUG"
    env = platform.chart_env(platform.adopt(RELEASE, RELEASE))
    assert env["MODELPLANE_LOG_LEVEL"] == "DEBUG", env
    assert {c: ext.read_custom_resource_definition(c).metadata.uid for c in crd_uids} == crd_uids
    assert _phase(objs, namespace, md["metadata"]["name"]) == "Ready"
    assert stack.preview().change_summary.get("same")
    assert not {k for k, v in stack.preview().change_summary.items() if v and k != "same"}

    # 5. pulumi destroy removes what it created, and keeps the CRDs (retainOnDelete, as the
    # chart keeps them: helm.sh/resource-policy) and so every ModelDeployment.
    destroy = stack.destroy(on_output=print)
    assert destroy.summary.result == "succeeded"
    assert platform.helm("list", "-n", RELEASE, "-q", check=False).strip() == ""
    wait_for(
        lambda: not cluster.kubectl("get", "namespace", RELEASE, "--ignore-not-found"),
        timeout=120,
        what=f"namespace {RELEASE} deleted",
    )
    for name in GPU_TYPES:
        assert not cluster.kubectl("get", "accel", name, "--ignore-not-found")
    assert {c: ext.read_custom_resource_definition(c).metadata.uid for c in crd_uids} == crd_uids
    after = _get_md(objs, namespace, md["metadata"]["name"])
    assert after["metadata"]["uid"] == md_uid


def _crds() -> list[str]:
    return sorted(
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in (REPO / "crds").glob("*.yaml")
    )


def _example(namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / "chat-llama-8b.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    return doc


def _get_md(objs: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = objs.get_namespaced_custom_object(
        GROUP, VERSION, ns, "modeldeployments", name
    )
    return obj


def _phase(objs: Any, ns: str, name: str) -> str | None:
    return (_get_md(objs, ns, name).get("status") or {}).get("phase")

"""The local GPU cluster behaves like a real cluster: versions, GPU nodes, scheduling, GC, CEL."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane.catalog import accelerators as acc
from modelplane_testbed.localcluster import LocalCluster, ensure, listening_sockets, load_layout
from modelplane_testbed.localcluster.netns import POD_CIDR
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_server_reports_pinned_kubernetes_version(cluster: LocalCluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json"))
    assert out["serverVersion"]["gitVersion"].startswith("v1.36.")
    assert out["clientVersion"]["gitVersion"] == out["serverVersion"]["gitVersion"]
    code, body = cluster.get("/version")
    assert code == 200 and json.loads(body)["minor"] == "36"
    apiserver = ensure(build=False).kube_apiserver
    assert subprocess.run(
        [apiserver, "--version"], capture_output=True, text=True
    ).stdout.startswith("Kubernetes v1.36.")


def test_gpu_nodes_ready_with_gpus_labels_and_taint(api: Any) -> None:
    # The layout's nodes (the provisioner and Karpenter may have added more for earlier tests).
    added = ("modelplane.io/provisioned-by", "karpenter.sh/nodepool")
    nodes = [
        n
        for n in client.CoreV1Api(api).list_node().items
        if not any(k in (n.metadata.labels or {}) for k in added)
    ]
    gpu_nodes = [n for n in nodes if "nvidia.com/gpu" in (n.status.allocatable or {})]
    expected = [m for m in load_layout().manifests() if "nvidia.com/gpu" in m["status"]["capacity"]]
    assert len(gpu_nodes) == len(expected) >= 8
    products = set()
    for n in gpu_nodes:
        conds = {c.type: c.status for c in n.status.conditions}
        assert conds["Ready"] == "True", n.metadata.name
        labels = n.metadata.labels
        a, shape = acc.shape(labels[acc.LABEL_INSTANCE_TYPE])
        assert n.status.allocatable["nvidia.com/gpu"] == str(shape.gpus)
        assert labels[acc.LABEL_GPU_PRODUCT] == a.gpu_product
        assert labels[acc.LABEL_GPU_COUNT] == str(shape.gpus)
        assert labels[acc.LABEL_GPU_MEMORY] == str(a.memory_mib)
        assert labels[acc.LABEL_ZONE].startswith("local-1")
        taints = {(t.key, t.value, t.effect) for t in n.spec.taints}
        assert ("nvidia.com/gpu", "present", "NoSchedule") in taints
        products.add(labels[acc.LABEL_GPU_PRODUCT])
    # every default accelerator kind is represented, plus CPU-only system nodes
    assert products == {a.gpu_product for a in acc.DEFAULT_ACCELERATORS}
    assert any("nvidia.com/gpu" not in (n.status.allocatable or {}) for n in nodes)
    zones = {n.metadata.labels[acc.LABEL_ZONE] for n in gpu_nodes}
    assert len(zones) == 3


def _gpu_deployment(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "server",
                            "image": "example.invalid/server:1",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def _pods(api: Any, ns: str, app: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app={app}").items)


def test_eight_gpu_pod_lands_on_eight_gpu_node_and_becomes_ready(api: Any, namespace: str) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(namespace, _gpu_deployment("big", 8))

    def ready_pod() -> Any:
        for p in _pods(api, namespace, "big"):
            conds = {c.type: c.status for c in (p.status.conditions or [])}
            if conds.get("Ready") == "True":
                return p
        return None

    pod = wait_for(ready_pod, timeout=60, what="8-GPU pod Ready")
    node = client.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert pod.status.phase == "Running"


def test_pod_needing_more_gpus_than_any_node_stays_unschedulable(api: Any, namespace: str) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(namespace, _gpu_deployment("huge", 16))

    def unschedulable() -> Any:
        for p in _pods(api, namespace, "huge"):
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False":
                    return c
        return None

    cond = wait_for(unschedulable, timeout=60, what="PodScheduled=False")
    assert cond.reason == "Unschedulable"
    assert "nvidia.com/gpu" in cond.message
    assert all(p.spec.node_name is None for p in _pods(api, namespace, "huge"))


def test_deleting_deployment_garbage_collects_replicaset_and_pods(api: Any, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, _gpu_deployment("gc", 1))
    wait_for(lambda: _pods(api, namespace, "gc"), timeout=60, what="pod created")
    assert apps.list_namespaced_replica_set(namespace).items
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not _pods(api, namespace, "gc")
        ),
        timeout=90,
        what="ReplicaSet and pods collected",
    )


def test_crd_with_invalid_cel_rule_is_rejected(api: Any) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.modelplane.io"},
        "spec": {
            "group": "example.modelplane.io",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.size >>> 2", "message": "broken on purpose"}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    with pytest.raises(ApiException) as exc:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    assert exc.value.status == 422
    assert "x-kubernetes-validations[0].rule" in exc.value.body
    assert "compil" in exc.value.body.lower()


def test_built_helm_reports_versions_and_templates(cluster: LocalCluster, tmp_path: Path) -> None:
    helm = ensure(build=False).helm
    out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("v3.")
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    # kubeVersion needs a real default kube version in helm (set by the build's ldflags).
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: {{ .Capabilities.KubeVersion.Version | quote }}}\n"
    )
    default = subprocess.run(
        [helm, "template", str(chart)], capture_output=True, text=True, check=True
    )
    assert 'kube: "v1.36' in default.stdout
    pinned = subprocess.run(
        [helm, "template", str(chart), "--kube-version", "v1.35.2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 'kube: "v1.35.2"' in pinned.stdout


def test_started_processes_listen_only_on_loopback_or_pod_addresses(
    cluster: LocalCluster,
) -> None:
    """The host sees only the relay on 127.0.0.1; inside the cluster's namespace processes
    listen on 127.0.0.1 or on pod addresses, which exist nowhere else."""
    pod_cidr = ipaddress.ip_network(POD_CIDR)
    seen = 0
    for pid in cluster.pids():
        for addr, _port in listening_sockets(pid):
            seen += 1
            ip = ipaddress.ip_address(addr.removeprefix("::ffff:"))
            assert ip.is_loopback or ip in pod_cidr, f"pid {pid} listens on {addr}"
    assert seen >= 5  # relay, etcd (client + peer), apiserver, controller-manager, scheduler


def test_nothing_inside_the_cluster_can_reach_outside(cluster: LocalCluster) -> None:
    """The cluster's namespace has only lo: a connection to any address outside it fails at
    once (no route), while pod addresses are local there and the apiserver is reachable."""
    probe = textwrap.dedent(
        """
        import errno, json, socket, sys, time
        out = {}
        for host in sys.argv[1:]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            t = time.monotonic()
            try:
                s.connect((host, 443))
                out[host] = "connected"
            except OSError as e:
                out[host] = [errno.errorcode.get(e.errno, str(e.errno)), time.monotonic() - t]
            finally:
                s.close()
        srv = socket.socket()
        srv.bind(("10.244.7.9", 0))
        out["bind"] = srv.getsockname()[0]
        print(json.dumps(out))
        """
    )
    outside = ["192.0.2.1", "8.8.8.8", "172.16.0.1", "10.0.0.1", "10.245.0.1"]
    host_ips = _host_addresses()
    proc = subprocess.run(
        [*cluster.enter_prefix(), sys.executable, "-c", probe, *outside, *host_ips],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = json.loads(proc.stdout)
    assert out.pop("bind") == "10.244.7.9"
    for host, result in out.items():
        assert result != "connected", host
        code, seconds = result
        assert code == "ENETUNREACH", (host, result)
        assert seconds < 1.0, (host, result)  # refused at once: nothing was sent
    # ...while the apiserver is reachable from outside through the relay.
    assert cluster.get("/readyz")[0] == 200


def _host_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses (they must not be reachable either)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    ips = [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]
    return [ip for ip in ips if not ipaddress.ip_address(ip).is_loopback][:3]


def test_second_cluster_runs_side_by_side_and_down_leaves_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    layout = load_layout().with_overrides(
        [
            "system=1",
            *(f"{s.name}=0" for a in acc.DEFAULT_ACCELERATORS for s in a.shapes),
            "g5.xlarge=1",
        ]
    )
    other = LocalCluster("side", state_root=tmp_path, layout=layout, die_with_parent=True)
    try:
        st = other.up(timeout=240)
        assert st.ports["apiserver"] != cluster.state().ports["apiserver"]  # type: ignore[union-attr]
        assert other.status()["readyz"] and cluster.status()["readyz"]
        assert other.status()["nodes"] == 2
        pids = other.pids()
        assert len(pids) == 7  # holder + relay, etcd, apiserver, cm, scheduler, kwok, lws
        holder = other.state().netns_pid  # type: ignore[union-attr]
        assert holder in pids
    finally:
        other.down()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still running"
    assert not other.dir.exists()
    assert cluster.status()["readyz"]  # the first cluster is untouched


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_cli_status_reports_the_cluster(cluster: LocalCluster) -> None:
    env = {**os.environ, "MODELPLANE_STATE": str(cluster.dir.parent.parent)}
    out = subprocess.run(
        ["modelplane-testbed", "cluster", "status", "--name", cluster.name],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["running"] and info["readyz"] and info["gpus"] >= 60


def _unprivileged_env(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment that run the test bed's CLI as `nobody` (uid 65534): the
    binaries hard-linked into a directory it can read, the system Python 3.11 with the
    project's site-packages (the session's own interpreter may live under root's home)."""
    cache = tmp / "cache"
    (cache / "bin").mkdir(parents=True)
    for d in ensure(build=False).bin_dirs[0].parent.iterdir():
        subprocess.run(["cp", "-al", str(d), str(cache / "bin")], check=True)
    state = tmp / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    for d in (tmp, cache, cache / "bin"):
        d.chmod(0o755)
    site = next(Path(sys.prefix).glob("lib/python3.*/site-packages"))
    repo = Path(__file__).resolve().parents[2]
    env = {
        "HOME": str(state),
        "PATH": "/usr/bin:/bin",
        "MODELPLANE_CACHE": str(cache),
        "MODELPLANE_STATE": str(state),
        "MODELPLANE_REPO": str(repo),
        "PYTHONPATH": os.pathsep.join([str(repo / "operator"), str(repo / "testbed"), str(site)]),
    }
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i"]
    prefix += [f"{k}={v}" for k, v in env.items()]
    return [*prefix, "/usr/bin/python3", "-m", "modelplane_testbed.cli", "cluster"], env


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite itself runs unprivileged here")
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the system Python")
def test_cluster_up_as_an_unprivileged_user_and_down_leaves_nothing() -> None:
    """As root the suite's own cluster proves root works; here the same `cluster up` runs as
    `nobody`: the user namespace maps it to root inside, pod addresses are local, the relay
    serves the host, and `cluster down` leaves no holder, relay or control-plane process."""
    # Not pytest's tmp_path: its parents are private to root.
    tmp_path = Path(tempfile.mkdtemp(prefix="modelplane-nobody-"))
    tmp_path.chmod(0o755)
    cli, env = _unprivileged_env(tmp_path)
    layout = ["--node", "system=1"]
    layout += [f"--node={s.name}=0" for a in acc.DEFAULT_ACCELERATORS for s in a.shapes]
    up = subprocess.run(
        [*cli, "up", "--name", "nobody", *layout, "--node", "g5.xlarge=1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = Path(env["MODELPLANE_STATE"]) / "clusters" / "nobody"
        st = json.loads((state / "state.json").read_text())
        holder = st["netnsPid"]
        assert Path(f"/proc/{holder}").stat().st_uid == 65534
        kubeconfig = state / "admin.kubeconfig"
        nodes = subprocess.run(
            [str(ensure(build=False).kubectl), f"--kubeconfig={kubeconfig}", "get", "nodes"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "gpu-g5-xlarge-0" in nodes and "system-0" in nodes
        pids = [p["pid"] for p in st["processes"]]
        assert len(pids) == 7  # the six above and the LWS controller
    finally:
        down = subprocess.run(
            [*cli, "down", "--name", "nobody"], capture_output=True, text=True, timeout=60
        )
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still running"

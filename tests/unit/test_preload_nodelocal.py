"""NodeLocal preload: the server reads what the cache Job wrote, and warm nodes never roll it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders import preload
from modelplane.builders.objects import (
    NODE_CACHE_MOUNT,
    NODE_CACHE_SCRIPT,
    NODE_LOCAL_MODEL,
    BuildContext,
)
from modelplane.builders.resolve import resolve
from modelplane.commands import default_classes
from modelplane.reconcile.core import DeploymentView, Observed, plan
from modelplane_testbed import factories

NOW = "2026-01-01T00:00:00Z"


def md(**spec: Any) -> ModelDeployment:
    base = factories.spec(
        model={"catalog": "llama-v3p1-8b-instruct", "credentialsSecretRef": {"name": "hf"}},
        preload={"mode": "NodeLocal", "warmNodes": 1},
        replicas={"min": 1, "max": 3},
    )
    base.update(spec)
    return factories.model_deployment("m", "ns", base)


def deployment(m: ModelDeployment, view: preload.PreloadView | None) -> dict[str, Any]:
    obs = Observed(
        m, default_classes(), DeploymentView(exists=False), {}, (), {}, NOW, preload=view
    )
    p = plan(obs)
    return next(o for o in p.apply if o["kind"] == "Deployment" and o["metadata"]["name"] == "m")


def test_the_server_mounts_the_node_cache_read_only_where_the_engine_reads() -> None:
    m = md()
    r = resolve(m, default_classes())
    dep = deployment(m, None)
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    job = preload.build_cache_job(r, "node-1", BuildContext())
    job_pod = job["spec"]["template"]["spec"]
    job_dir = next(v for v in job_pod["volumes"] if "hostPath" in v)["hostPath"]["path"]
    # The Job downloads into that directory (local_dir) and writes the marker last.
    assert job_pod["containers"][0]["args"][2] == job_dir == preload.cache_dir(r)
    assert preload.COMPLETE_MARKER in job_pod["containers"][0]["command"][2]
    # The server mounts that very directory, read-only.
    [vol] = [v for v in pod["volumes"] if v["name"] == "node-cache"]
    assert vol["hostPath"] == {"path": job_dir, "type": "DirectoryOrCreate"}
    [mount] = [x for x in server["volumeMounts"] if x["name"] == "node-cache"]
    assert mount == {"name": "node-cache", "mountPath": NODE_CACHE_MOUNT, "readOnly": True}
    # The engine loads from the local path the init container prepares; no second download.
    assert server["args"][0] == NODE_LOCAL_MODEL
    env = {e["name"]: e for e in server["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    [init] = pod["initContainers"]
    assert init["args"][:3] == [NODE_CACHE_MOUNT, NODE_LOCAL_MODEL, preload.COMPLETE_MARKER]
    assert init["args"][3] == r.uri.removeprefix("hf://")
    init_env = {e["name"]: e for e in init["env"]}
    assert "HF_HUB_OFFLINE" not in init_env  # a cold node downloads in the init container
    assert init_env["HF_TOKEN"] == env["HF_TOKEN"]  # gated weights download there too
    assert {"name": "node-cache", "mountPath": NODE_CACHE_MOUNT, "readOnly": True} in init[
        "volumeMounts"
    ]


def test_a_pinned_revision_is_downloaded_not_passed_to_the_local_path() -> None:
    m = md(model={"uri": "hf://org/model", "revision": "abc123"},
           accelerator={"class": "nvidia-l4-24gb", "count": 1})  # fmt: skip
    pod = deployment(m, None)["spec"]["template"]["spec"]
    assert "--revision" not in pod["containers"][0]["args"]
    assert pod["initContainers"][0]["args"][3:] == ["org/model", "abc123"]
    job = preload.build_cache_job(resolve(m, default_classes()), "n", BuildContext())
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["org/model", "abc123"]


def test_the_hub_stays_reachable_when_the_server_still_needs_it() -> None:
    dep = deployment(md(engine={"maxContextLength": 8192, "lora": {}}), None)
    env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "HF_HUB_OFFLINE" not in env  # runtime LoRA adapters come from the Hub by repo id


def test_other_sources_and_modes_do_not_touch_node_caches() -> None:
    for spec in (
        {"preload": {"mode": "None"}},
        {"preload": {"mode": "SharedVolume"}},
        {
            "model": {"uri": "s3://bucket/llama"},
            "accelerator": {"class": "nvidia-l4-24gb", "count": 1},
        },
    ):
        pod = deployment(md(**spec), None)["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "hostPath" in v], spec
        assert pod["containers"][0]["args"][0] != NODE_LOCAL_MODEL


def test_a_node_becoming_warm_never_changes_the_deployment() -> None:
    m = md()
    cold = deployment(m, None)
    for view in (
        preload.PreloadView(cached_nodes=0, class_nodes=2, downloading=2),
        preload.PreloadView(cached_nodes=1, class_nodes=2, downloading=1),
        preload.PreloadView(cached_nodes=2, class_nodes=2),
    ):
        assert deployment(m, view) == cold, view
    # Placement prefers cached nodes; it never requires them.
    affinity = cold["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert set(affinity) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    # With the Deployment applied, the first warm node asks for no write of it.
    applied = cold["metadata"]["annotations"]["modelplane.io/applied-hash"]
    obs = Observed(
        m,
        default_classes(),
        DeploymentView(exists=True, replicas=1, applied_hash=applied),
        {},
        (),
        {},
        NOW,
        preload=preload.PreloadView(cached_nodes=1, class_nodes=2),
    )
    writes = [(o["kind"], o["metadata"]["name"]) for o in plan(obs).apply]
    assert ("Deployment", "m") not in writes and ("Deployment", "m-warm") in writes


def _run_init(tmp: Path, filled: bool) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Run the init container's script against a fake node cache and a fake Hub client."""
    cache, model, fake = tmp / "node-cache", tmp / "cache" / "model", tmp / "fake"
    cache.mkdir(parents=True)
    model.parent.mkdir()
    (fake / "huggingface_hub").mkdir(parents=True)
    (fake / "huggingface_hub" / "__init__.py").write_text(
        "import os\n"
        "def snapshot_download(repo, revision=None, local_dir=None):\n"
        "    os.makedirs(local_dir, exist_ok=True)\n"
        "    open(os.path.join(local_dir, 'config.json'), 'w').write(repo)\n"
    )
    if filled:
        (cache / "config.json").write_text("cached")
        (cache / preload.COMPLETE_MARKER).write_text("")
    proc = subprocess.run(
        [sys.executable, "-c", NODE_CACHE_SCRIPT, str(cache), str(model),
         preload.COMPLETE_MARKER, "org/model", ""],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(fake)},
    )  # fmt: skip
    return model, proc


def test_init_links_a_filled_cache_and_downloads_on_a_cold_node(tmp_path: Path) -> None:
    warm, proc = _run_init(tmp_path / "warm", filled=True)
    assert warm.is_symlink() and (warm / "config.json").read_text() == "cached"
    assert "node's cache" in proc.stdout
    cold, proc = _run_init(tmp_path / "cold", filled=False)
    assert not cold.is_symlink() and (cold / "config.json").read_text() == "org/model"
    assert "downloading" in proc.stdout

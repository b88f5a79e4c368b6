"""The operator image the chart deploys: pinned bases, non-root, and the chart's appVersion."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from modelplane import __version__

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modelplane" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_base_images_are_pinned_by_digest() -> None:
    stages: set[str] = set()
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    for rest in froms:
        image, *alias = rest.split()
        if image.lower() not in stages:
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image} is not pinned by digest"
        if alias:
            assert alias[0].upper() == "AS"
            stages.add(alias[1].lower())


def test_final_stage_runs_as_non_root_and_starts_the_operator() -> None:
    instructions = _instructions()
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    final = instructions[last_from:]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0 and uid == "65532"  # what the chart's pod expects
    assert ("ENTRYPOINT", '["modelplane"]') in final
    assert ("CMD", '["run"]') in final
    builder = " ".join(rest for word, rest in instructions[:last_from] if word == "RUN")
    assert "uv sync --frozen --no-dev" in builder


def test_build_context_is_limited_to_what_the_image_needs() -> None:
    lines = (REPO / ".containerignore").read_text().splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    assert entries[0] == "*"
    assert {"!pyproject.toml", "!uv.lock", "!operator/"} <= set(entries)

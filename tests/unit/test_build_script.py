"""tools/build.sh with a stand-in `go`: what it does with the tools' output, not the Go build.

The stand-in `go` answers `go env GOVERSION` and writes, for `go build -o OUT`, a binary whose
`--version` prints a long text (the way a real etcd prints several lines). Under
`set -o pipefail`, `tool --version | head -1` fails as soon as head exits before the tool has
written everything (SIGPIPE, exit status 141), and the build dies after a successful compile.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tools" / "build.sh"

FAKE_GO = """#!/usr/bin/env bash
set -eu
case "$1" in
  env) echo go9.99.0 ;;
  build)
    out=""
    while [ $# -gt 0 ]; do
      if [ "$1" = "-o" ]; then out="$2"; shift; fi
      shift
    done
    mkdir -p "$(dirname "$out")"
    # A version text far larger than a pipe buffer: the writer is still writing when a
    # `head -1` reader has exited.
    printf '#!/usr/bin/env bash\\nfor i in $(seq 1 20000); do echo "version line $i"; done\\n' > "$out"
    chmod +x "$out"
    ;;
  *) echo "fake go: unsupported $*" >&2; exit 2 ;;
esac
"""


def _fake_go(tmp: Path) -> dict[str, str]:
    bindir = tmp / "fakebin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "MODELPLANE_CACHE": str(tmp / "cache"),
    }


def test_a_tool_with_a_long_version_text_does_not_abort_the_build(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(BUILD), "etcd"],
        env=_fake_go(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "cache" / "bin")
    version = (REPO / "tools" / "versions.env").read_text()
    etcd_version = re.search(r"^ETCD_VERSION=(\S+)$", version, re.M)
    assert etcd_version is not None
    done = tmp_path / "cache" / "bin" / f"etcd-{etcd_version.group(1)}"
    assert (done / ".complete").exists() and (done / "etcd").exists()
    assert "version line 1" in proc.stderr  # the first line of the version is still shown


def test_no_pipe_into_a_reader_that_stops_early() -> None:
    """`| head`, `| grep -q` and the like end the pipe early; under pipefail that is an error."""
    early = re.compile(r"\|\s*(head|grep\s+-q|grep\s+-m|sed\s+-n\s*['\"]?\d+q)")
    offenders = [
        f"{i}: {line.strip()}"
        for i, line in enumerate(BUILD.read_text().splitlines(), 1)
        if early.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, offenders

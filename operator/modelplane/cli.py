"""The `modelplane` command line.

modelplane run                            the operator
modelplane render -f md.yaml              what the operator would apply, offline
modelplane crds                           the CRDs, generated from the API types
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelplane", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from modelplane import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # user-facing errors: one clear line, not a traceback
        if isinstance(e, FileNotFoundError):
            print(f"modelplane: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

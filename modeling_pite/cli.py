"""The `pite` command line: one sub-command per job, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module that defines `add_subparser(subparsers)`; the sub-parser sets `func=...`.
COMMAND_MODULES: dict[str, str] = {
    "annotate": "processing.annotation.cli",
    "evaluate": "modeling_pite.evaluation.cli",
    "convert-original": "modeling_pite.conversion",
    "extract-features": "modeling_pite.feature_extraction",
    "demo": "processing.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pite", description="PiTe: pixel-temporal alignment for video LLMs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES.values():
        importlib.import_module(module_name).add_subparser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

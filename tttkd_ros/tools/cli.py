"""`tttkd`: one console script, one subcommand per tool module.

Each tool module `tttkd_ros.tools.<name>` defines `register(subparsers)`, which adds its
subcommand and sets `func=run`; `run(args)` returns the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("demo", "synth", "train", "eval", "bench", "pretrain-teacher")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tttkd", description="Test-time adaptation of LiDAR segmentation (TTT-KD + OCL)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"tttkd_ros.tools.{name.replace('-', '_')}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`tttkd`: one console script, one subcommand per tool module.

Each tool module `tttkd_ros.tools.<module>` (`bench.latency` for `tttkd bench`, whose suites
live in `tools/bench/`) defines `register(parser)`, which fills its subcommand's parser and
sets `func=run`; `run(args)` returns the exit code. A tool module is
imported only when its subcommand runs (or its help is asked for), so `tttkd --help` and the
light tools do not wait for torch, spconv and timm to load.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (tool module, the line `tttkd --help` shows for it)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run adapt_node on a LiDAR-shift and a camera-shift drive, adapting or not"),
    "synth": ("synth", "write a synthetic LiDAR + camera drive (SemanticKITTI layout)"),
    "train": ("train", "train the source model on a SemanticKITTI-layout folder"),
    "probe": ("probe", "fit a trained checkpoint's teacher probe (label-level distillation)"),
    "eval": ("eval", "evaluate adaptation modes on the same frames (JSON, report, plots)"),
    "bench": ("bench.latency", "latency per stage (default), or the adaptation / stability tables"),
    "pretrain-teacher": ("pretrain_teacher",
                         "train a DINOv2-architecture teacher on synthetic images"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its line of help; the options (and the tool's imports) of
    `command` only, or of every subcommand when None."""
    parser = argparse.ArgumentParser(
        prog="tttkd", description="Test-time adaptation of LiDAR segmentation (TTT-KD + OCL)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if command is None or command == name:
            importlib.import_module(f"tttkd_ros.tools.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the subcommand is the first word that is not an option (`tttkd` itself has only -h)
    command = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

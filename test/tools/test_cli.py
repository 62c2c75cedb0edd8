"""`tttkd`: every subcommand listed, a tool's module (and torch) loaded only when it runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tttkd_ros.tools import cli
from tttkd_ros.tools.bench import latency

HELP_WITHOUT_TORCH = """
import sys
from tttkd_ros.tools import cli
try:
    cli.main(["--help"])
except SystemExit:
    pass
print("torch loaded:", "torch" in sys.modules)
"""


def test_top_level_help_lists_every_subcommand_without_loading_torch() -> None:
    out = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    for name, (_, summary) in cli.SUBCOMMANDS.items():
        assert name in out and summary.split()[0] in out
    assert out.strip().endswith("torch loaded: False")


def test_a_subcommand_gets_its_own_options_and_runner() -> None:
    args = cli.build_parser("bench").parse_args(["bench", "--points", "100", "--repeats", "2"])
    assert args.points == [100] and args.repeats == 2 and args.func is latency.run


def test_every_tool_registers_its_subcommand() -> None:
    parser = cli.build_parser()
    for name in cli.SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0


def test_an_unknown_subcommand_is_answered_with_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bnch"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'bnch'" in err and "bench" in err

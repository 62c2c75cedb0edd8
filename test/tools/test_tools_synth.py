"""`tttkd synth`: lists the presets and writes a readable SemanticKITTI sequence."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from tttkd_ros.data.drive import render_frame
from tttkd_ros.data.kitti import read_label_map, read_sequence
from tttkd_ros.data.shifts import get_shift, list_shifts
from tttkd_ros.tools import synth


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tttkd")
    synth.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["synth", *argv])


def test_list_shifts(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--list-shifts"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == list_shifts()


def test_writes_a_sequence(tmp_path: Path) -> None:
    args = parse(["--out", str(tmp_path), "--frames", "2", "--shift", "fog", "--seed", "3",
                  "--sequence", "05"])
    assert args.func(args) == 0
    seq = read_sequence(tmp_path, "05")
    assert len(seq) == 2
    first = seq[0]
    expected = render_frame(get_shift("fog"), seed=3, index=0)
    np.testing.assert_array_equal(first.points, expected.points)
    np.testing.assert_array_equal(first.labels, expected.labels)
    np.testing.assert_array_equal(first.cameras[0].image, expected.cameras[0].image)
    assert read_label_map(tmp_path / "semantic-kitti.yaml")["learning_map"][252] == 1


def test_rejects_missing_out_and_unknown_shift(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse([])
    assert args.func(args) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--out", "x", "--shift", "no_such_shift"])

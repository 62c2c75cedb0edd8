"""`tttkd train` fits the teacher probe, `tttkd probe` adds one to a checkpoint trained
without it, and the engine loaded from that checkpoint distils its labels."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from tttkd_ros.core.config import AdaptConfig, TeacherConfig
from tttkd_ros.core.loading import load_engine
from tttkd_ros.core.model.checkpoint import CLASS_SHARES_KEY, load_checkpoint, save_checkpoint
from tttkd_ros.core.model.teacher_probe import TeacherProbe
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.kitti import write_sequence
from tttkd_ros.tools.cli import build_parser

TINY = {"lidar_beams": 16, "lidar_azimuth_res_deg": 1.5, "image_scale": 0.1}
pytestmark = [pytest.mark.filterwarnings("ignore:DINOv2 teacher"),
              pytest.mark.usefixtures("one_torch_thread")]


def tool(*argv: str) -> argparse.Namespace:
    return build_parser(argv[0]).parse_args(list(argv))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drive")
    write_sequence(root, "00", generate_drive("clean", frames=3, seed=0, **TINY))
    return root


def train(data: Path, out: Path, *extra: str) -> Path:
    args = tool("train", "--data", str(data), "--out", str(out), "--train-seqs", "00",
                "--epochs", "1", "--batch-size", "1", "--voxel-size", "0.2",
                "--teacher-height", "28", "--device", "cpu", *extra)
    assert args.func(args) == 0
    return out


def test_training_with_a_teacher_stores_a_probe(data: Path, tmp_path: Path) -> None:
    out = train(data, tmp_path / "model.pt")  # no validation: the best loss picks the epoch
    probe = TeacherProbe.from_extra(load_checkpoint(out, "cpu").extra)
    assert probe is not None and probe.weight.shape == (19, 384)
    assert 0.0 < probe.accuracy <= 1.0


def test_probe_adds_one_that_the_engine_distils(data: Path, tmp_path: Path, capsys) -> None:
    plain = train(data, tmp_path / "plain.pt", "--kd-weight", "0")  # no teacher: no probe
    assert TeacherProbe.from_extra(load_checkpoint(plain, "cpu").extra) is None
    out = tmp_path / "probed.pt"
    args = tool("probe", "--checkpoint", str(plain), "--data", str(data), "--train-seqs",
                "00", "--out", str(out))
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rindex("\n{"):])["checkpoint"] == str(out)
    before, after = load_checkpoint(plain, "cpu"), load_checkpoint(out, "cpu")
    assert all(torch.equal(before.model.state_dict()[k], v)
               for k, v in after.model.state_dict().items())  # the weights are kept
    assert after.teacher["image_height"] == 28  # the teacher it was trained with, resolved
    cfg = AdaptConfig(w_probe=1.0, probe_confidence=0.0, budget_ms=1e6)
    engine = load_engine(str(out), cfg, TeacherConfig(), "cpu").engine
    assert engine.probe is not None
    frame = next(generate_drive("clean", frames=1, seed=9, **TINY)).to_frame()
    assert engine.process(frame).stats.losses["probe"] > 0


def test_probe_refuses_another_teacher(data: Path, tmp_path: Path) -> None:
    plain = train(data, tmp_path / "plain.pt", "--kd-weight", "0")
    weights = tmp_path / "other.pth"
    weights.write_bytes(b"not the teacher it was trained with")
    args = tool("probe", "--checkpoint", str(plain), "--data", str(data),
                "--teacher-weights", str(weights))
    with pytest.raises(SystemExit, match="not the teacher the checkpoint was trained with"):
        args.func(args)


def test_shares_only_records_the_class_shares_of_an_older_checkpoint(data: Path,
                                                                      tmp_path: Path) -> None:
    """A checkpoint from before tttkd train recorded class shares gets them, and nothing
    else: no teacher is needed and the weights and the rest stay as they were."""
    plain = train(data, tmp_path / "plain.pt", "--kd-weight", "0")
    before = load_checkpoint(plain, "cpu")
    older = tmp_path / "older.pt"
    save_checkpoint(older, before.model, before.cfg, class_names=before.class_names,
                    palette=before.palette, teacher_name=before.teacher_name,
                    extra={k: v for k, v in before.extra.items() if k != CLASS_SHARES_KEY})
    assert load_checkpoint(older, "cpu").class_shares is None
    args = tool("probe", "--checkpoint", str(older), "--data", str(data), "--train-seqs",
                "00", "--shares-only", "--teacher-weights", str(tmp_path / "absent.pth"))
    assert args.func(args) == 0
    after = load_checkpoint(older, "cpu")
    torch.testing.assert_close(after.class_shares, before.class_shares)
    assert TeacherProbe.from_extra(after.extra) is None
    assert all(torch.equal(before.model.state_dict()[k], v)
               for k, v in after.model.state_dict().items())

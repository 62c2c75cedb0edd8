"""The README's Tools block runs as written, in order, from an empty folder: each command as
a user types it, with small-size options appended (argparse keeps the last value of an
option), so the block cannot rot. A new command in the block needs its small sizes here."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORLD = ["--set", "lidar_beams=8", "--set", "lidar_azimuth_res_deg=2.0",
         "--set", "image_scale=0.1"]
# command prefix -> options that make it small (appended after the README's own)
SMALL = {
    "tttkd synth --list-shifts": [],
    "tttkd synth": ["--frames", "2", *WORLD],
    "tttkd train": ["--epochs", "1", "--batch-size", "1", "--voxel-size", "0.2",
                    "--device", "cpu"],
    "tttkd probe": ["--device", "cpu"],
    "tttkd eval": ["--max-frames", "1", "--device", "cpu", "--no-progress"],
    "tttkd bench --suite": ["--shifts", "fog", "--modes", "kd", "--frames", "2", "--steps",
                            "1", "--episodic-steps", "0", "--window", "1", "--device", "cpu",
                            *(f"--world={w}" for w in WORLD[1::2])],
    "tttkd bench": ["--points", "500", "--cameras", "1", "--schedules", "sync", "--repeats",
                    "1", "--image-hw", "56", "112", "--device", "cpu", "--no-progress"],
    "tttkd pretrain-teacher": ["--minutes", "0.02", "--drives", "1", "--frames", "2",
                               "--towns", "1", "--held-out-frames", "1", *WORLD],
    "python -m tttkd_ros.tools.bench.model": ["--points", "500", "--backbones", "tiny",
                                              "--repeats", "1"],
}
# commands the suite runs elsewhere, for the reason given
ELSEWHERE = {
    "python -m tttkd_ros.tools.bench.soak": "starts adapt_node over DDS; the soak is a "
                                            "benchmark, the node's long runs are tested in "
                                            "test/ros",
}


def readme_block(marker: str) -> list[str]:
    """The commands of the README block after `<!-- marker -->`, comments removed."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def tools_block() -> list[str]:
    return readme_block("tools-block")


def small(command: str) -> list[str]:
    prefix = max((p for p in SMALL if command.startswith(p)), key=len, default=None)
    assert prefix is not None, f"no small-size options for README command {command!r}"
    argv = shlex.split(command) + SMALL[prefix]
    if argv[0] == "tttkd":  # the console script of this interpreter's environment
        argv = [sys.executable, "-m", "tttkd_ros.tools.cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    return argv


@pytest.mark.filterwarnings("ignore")
def test_the_tools_block_runs_in_order(tmp_path: Path) -> None:
    commands = tools_block()
    assert len(commands) >= 10 and commands[0].startswith("tttkd synth")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    ran = []
    for command in commands:
        if any(command.startswith(p) for p in ELSEWHERE):
            continue
        done = subprocess.run(small(command), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        ran.append(command)
    assert (tmp_path / "model.ckpt").is_file() and (tmp_path / "eval.json").is_file()
    assert (tmp_path / "data" / "bags" / "03").is_dir()
    assert len(ran) == len(commands) - len(ELSEWHERE)


# the training guide at small sizes: a tiny model, one epoch, the CPU, the teacher at 28 px
GUIDE_SMALL = ["--epochs", "1", "--batch-size", "1", "--voxel-size", "0.2", "--backbone",
               "tiny", "--teacher-height", "28", "--device", "cpu"]


@pytest.mark.filterwarnings("ignore")
def test_the_training_guide_runs_on_a_folder_of_its_layout(tmp_path: Path) -> None:
    """The guide's commands on a synthetic folder in SemanticKITTI's layout (every sequence
    it names, with colour images and calib.txt) and a DINOv2 file saved from timm's model:
    single-process training, torchrun on two CPU processes (gloo), and eval."""
    import timm
    import torch

    from tttkd_ros.core.model.checkpoint import load_checkpoint
    from tttkd_ros.data.drive import generate_drive
    from tttkd_ros.data.kitti import write_sequence

    kitti = tmp_path / "semantic_kitti"
    for k in range(11):
        write_sequence(kitti, f"{k:02d}", generate_drive(
            "clean", frames=1, seed=k, lidar_beams=8, lidar_azimuth_res_deg=2.0,
            image_scale=0.1))
    dino = tmp_path / "dinov2_vits14.pth"
    torch.save(timm.create_model("vit_small_patch14_dinov2", pretrained=False,
                                 num_classes=0).state_dict(), dino)
    env = {**os.environ, "KITTI": str(kitti), "DINO": str(dino), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    lines = readme_block("training-guide")
    assert lines[0].startswith("KITTI=") and lines[1].startswith("DINO=")
    for command in lines[2:]:
        small = command.replace("--nproc_per_node 4", "--nproc_per_node 2")
        small = small.replace("tttkd ", f"{sys.executable} -m tttkd_ros.tools.cli ", 1)
        small += " " + " ".join(GUIDE_SMALL if " train " in f" {command} " else
                                ["--max-frames", "1", "--teacher-height", "28", "--device",
                                 "cpu", "--no-progress"])
        done = subprocess.run(["bash", "-c", "\n".join([*lines[:2], small])], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    for name in ("skitti.ckpt", "skitti_4gpu.ckpt", "eval_08.json", "paired.ckpt"):
        assert (tmp_path / name).is_file(), name
    # each torchrun rank trains on its share of the frames; the checkpoint describes them all
    single, ranks = (load_checkpoint(tmp_path / name, "cpu")
                     for name in ("skitti.ckpt", "skitti_4gpu.ckpt"))
    torch.testing.assert_close(ranks.class_shares, single.class_shares)
    assert ranks.intensity == single.intensity

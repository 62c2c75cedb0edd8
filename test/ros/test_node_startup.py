"""Start-up failures of adapt_node: each says what is wrong and what to do, exits with
status 1 and prints no traceback. Every case runs the node's entry point `main()` in this
process (fast: torch is imported once); one also runs as users run it, a separate process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")

pytestmark = pytest.mark.dds

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 150.0  # imports (torch, timm, spconv) before the failure


def node_command() -> list[str]:
    script = Path(sys.executable).with_name("adapt_node")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tttkd_ros.ros.node"]


def case_files(tiny_checkpoint: Path, tmp: Path) -> dict[str, Path]:
    """A damaged copy of the checkpoint and a weights file of some other model."""
    import torch

    data = tiny_checkpoint.read_bytes()
    truncated = tmp / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])  # an interrupted copy
    foreign = tmp / "not_dinov2.pth"
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3)}, foreign)
    from tttkd_ros.core.model.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_checkpoint, "cpu")  # as if trained at teacher height 224
    recorded = tmp / "trained_at_224.pt"
    save_checkpoint(recorded, loaded.model, loaded.cfg, class_names=loaded.class_names,
                    palette=loaded.palette, teacher_name=loaded.teacher_name,
                    extra={"teacher": {"name": loaded.teacher_name, "weights": "random:0",
                                       "weights_file": "", "image_height": 224}})
    return {"truncated": truncated, "foreign": foreign, "recorded": recorded}


CASES = ["missing checkpoint", "damaged checkpoint", "teacher disagrees with checkpoint",
         "teacher image height disagrees with training",
         "palette disagrees with the classes", "teacher weights of another model",
         "teacher weights missing", "cuda asked for but absent"]


def cases(tiny_checkpoint: Path, files: dict[str, Path]) -> dict[str, tuple[dict, list[str]]]:
    """name -> (parameter overrides, phrases the fatal message must contain)."""
    import torch

    found = {
        "missing checkpoint": ({"checkpoint": "/nonexistent/model.pt"},
                               ["checkpoint not found: /nonexistent/model.pt", "tttkd train"]),
        "damaged checkpoint": ({"checkpoint": str(files["truncated"])},
                               [f"{files['truncated']} is not a tttkd checkpoint", "corrupted"]),
        "teacher disagrees with checkpoint": (
            {"teacher.name": "vit_base_patch14_dinov2"},
            ["does not fit this setup", "teacher_name", "Set teacher.name"]),
        "teacher image height disagrees with training": (
            {"checkpoint": str(files["recorded"])},  # node_params: teacher.image_height 56
            ["image_height: trained with 224, configured 56", "teacher.image_height to 224",
             "teacher.allow_mismatch: true"]),
        "palette disagrees with the classes": (
            {"palette": "'#ff0000, #00ff00, #0000ff'"},  # quoted: YAML reads # as a comment
            ["palette has 3 colours, the checkpoint has 19 classes"]),
        "teacher weights of another model": (
            {"teacher.weights": str(files["foreign"])},
            [f"{files['foreign']} does not match the teacher vit_small_patch14_dinov2",
             "Use a state dict saved from timm.create_model"]),
        "teacher weights missing": ({"teacher.weights": "/nonexistent/dinov2.pth"},
                                    ["teacher weights file not found: /nonexistent/dinov2.pth"]),
    }
    if not torch.cuda.is_available():
        found["cuda asked for but absent"] = (
            {"device": "cuda"}, ["CUDA is not available", "set device to 'cpu' or 'auto'"])
    return found


@pytest.fixture(scope="module")
def table(tiny_checkpoint, tmp_path_factory) -> dict[str, tuple[dict, list[str]]]:
    return cases(tiny_checkpoint, case_files(tiny_checkpoint, tmp_path_factory.mktemp("start")))


def ros_args(params: dict) -> list[str]:
    args = ["--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return args


def check_failure(status: int, output: str, phrases: list[str]) -> None:
    assert status == 1, f"exit status {status}\n{output}"
    assert "Traceback" not in output, output
    fatal = [line for line in output.splitlines() if "cannot start:" in line]
    assert len(fatal) == 1 and "[FATAL]" in fatal[0], output
    message = output[output.index("cannot start:"):]
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in\n{message}"


@pytest.mark.parametrize("name", CASES)
def test_start_up_failure_says_what_to_do_and_exits_1(table, node_params, capfd, name: str
                                                      ) -> None:
    from tttkd_ros.ros.node import main

    if name not in table:
        pytest.skip("CUDA is available on this machine")
    change, phrases = table[name]
    status = main(["adapt_node", *ros_args({**node_params, **change})])
    captured = capfd.readouterr()
    check_failure(status, captured.out + captured.err, phrases)


def test_the_executable_exits_1_without_a_traceback(table, node_params, tmp_path) -> None:
    """Also: the node leaves DDS discovery to the environment it is started in (this test
    runs inside the loopback-only namespace, so nothing leaves the machine either way)."""
    change, phrases = table["damaged checkpoint"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    done = subprocess.run([*node_command(), *ros_args({**node_params, **change})], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
                          check=False)
    check_failure(done.returncode, done.stdout + done.stderr, phrases)
    assert "DDS discovery: ROS_AUTOMATIC_DISCOVERY_RANGE unset" in done.stdout + done.stderr

"""Checkpoints: bit-identical round trip, clear errors for missing, corrupt and unfit files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tttkd_ros.core.config import ModelConfig
from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
from tttkd_ros.core.model.checkpoint import load_checkpoint, save_checkpoint
from tttkd_ros.core.model.segmentation import SegModel, build_model
from tttkd_ros.core.model.voxelize import VoxelGrid, voxelize

TEACHER = "vit_small_patch14_dinov2"


def cloud(n: int = 2000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([16.0, 16.0, 3.0]) - 8.0
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1)


def trained_model(cfg: ModelConfig, grid: VoxelGrid) -> SegModel:
    """A model whose weights and BN running stats differ from a fresh init."""
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").train()
    out = model(grid)
    labels = torch.randint(0, cfg.num_classes, (len(out.logits),))
    (nn.functional.cross_entropy(out.logits, labels) + out.feat2d.square().mean()).backward()
    with torch.no_grad():  # a plain SGD step (torch.optim's first step is slow to import)
        for p in model.parameters():
            p -= 0.1 * p.grad
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegModel, VoxelGrid]:
    grid = voxelize([cloud()], 0.2)
    cfg = ModelConfig(head="mlp", feat_dim=384, voxel_size=0.2)
    model = trained_model(cfg, grid)
    path = tmp_path_factory.mktemp("ckpt") / "sub" / "source.pt"
    save_checkpoint(path, model, cfg, class_names=CLASS_NAMES, palette=palette_rgb(),
                    teacher_name=TEACHER, extra={"epochs": 3, "miou": {"car": 41.5}})
    return path, model, grid


def test_round_trip_is_bit_identical(saved: tuple[Path, SegModel, VoxelGrid]) -> None:
    path, model, grid = saved
    loaded = load_checkpoint(path, "cpu")
    assert not loaded.model.training
    assert loaded.cfg == model.cfg
    assert loaded.class_names == CLASS_NAMES and loaded.teacher_name == TEACHER
    assert loaded.feat_dim == 384
    assert loaded.palette.dtype == palette_rgb().dtype
    assert (loaded.palette == palette_rgb()).all()
    assert loaded.extra == {"epochs": 3, "miou": {"car": 41.5}}
    with torch.no_grad():
        want, got = model(grid), loaded.model(grid)
    assert torch.equal(want.logits, got.logits) and torch.equal(want.feat2d, got.feat2d)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_file_loads_with_weights_only(saved: tuple[Path, SegModel, VoxelGrid]) -> None:
    payload = torch.load(saved[0], weights_only=True)
    assert payload["teacher_name"] == TEACHER


def test_expect_mismatch_names_each_key(saved: tuple[Path, SegModel, VoxelGrid]) -> None:
    path = saved[0]
    load_checkpoint(path, "cpu", expect={"num_classes": 19, "feat_dim": 384,
                                         "teacher_name": TEACHER})
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, "cpu", expect={"num_classes": 20, "feat_dim": 384,
                                             "teacher_name": "vit_base_patch14_dinov2"})
    message = str(info.value)
    assert "num_classes: checkpoint has 19, expected 20" in message
    assert f"teacher_name: checkpoint has '{TEACHER}', expected 'vit_base_patch14_dinov2'" \
        in message
    assert "feat_dim" not in message
    with pytest.raises(ValueError, match="cannot check"):
        load_checkpoint(path, "cpu", expect={"colour": "red"})


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_checkpoint(path, "cpu")


def test_corrupt_and_foreign_files(tmp_path: Path,
                                   saved: tuple[Path, SegModel, VoxelGrid]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved[0].read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for path in (junk, truncated, foreign):
        with pytest.raises(ValueError, match=f"{path} is not a tttkd checkpoint"):
            load_checkpoint(path, "cpu")


def test_save_refuses_what_cannot_be_loaded(tmp_path: Path) -> None:
    cfg = ModelConfig(feat_dim=8)
    model = build_model(cfg, "cpu")
    path = tmp_path / "bad.pt"
    with pytest.raises(TypeError, match="extra\\['array'\\]"):
        save_checkpoint(path, model, cfg, class_names=CLASS_NAMES, palette=palette_rgb(),
                        teacher_name=TEACHER, extra={"array": palette_rgb()})
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(path, model, cfg, class_names=CLASS_NAMES[:3], palette=palette_rgb(),
                        teacher_name=TEACHER)
    with pytest.raises(ValueError, match="palette"):
        save_checkpoint(path, model, cfg, class_names=CLASS_NAMES,
                        palette=palette_rgb().astype("int64"), teacher_name=TEACHER)
    assert not path.exists()

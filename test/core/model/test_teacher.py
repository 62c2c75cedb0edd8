"""DinoTeacher: resize rule, frozen random fallback, loading local weight files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from tttkd_ros.core.config import TeacherConfig
from tttkd_ros.core.model.teacher import DinoTeacher, resized_size

NAME = "vit_small_patch14_dinov2"
HEIGHT = 70  # 5 patches high: small enough for a quick CPU forward


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def timm_dinov2(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(NAME, pretrained=False, num_classes=0, dynamic_img_size=True).eval()


@pytest.fixture(scope="module")
def random_teacher() -> DinoTeacher:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return DinoTeacher(TeacherConfig(name=NAME, weights="", image_height=HEIGHT), "cpu")


def test_resize_rule() -> None:
    # height 70 -> 70; width 120 * 70 / 50 = 168 = 12 patches
    assert resized_size(50, 120, 70) == (70, 168)
    # height 224 -> 224; width 100 * 224 / 37 = 605.4 -> 43.2 patches -> 43 * 14
    assert resized_size(37, 100, 224) == (224, 602)
    # height 230 rounds to 16 patches = 224; width keeps the aspect of that height
    assert resized_size(480, 640, 230) == (224, 294)
    assert resized_size(1000, 5, 14) == (14, 14)  # never below one patch


def test_random_teacher_grid_is_frozen_and_shaped(random_teacher: DinoTeacher) -> None:
    assert random_teacher.random_weights and random_teacher.name == NAME
    assert random_teacher.feat_dim == 384
    before = {k: v.clone() for k, v in random_teacher.model.state_dict().items()}
    for height, width in ((50, 120), (37, 100)):
        feats = random_teacher.features(image(height, width))
        rows, cols = (s // 14 for s in resized_size(height, width, HEIGHT))
        assert feats.shape == (384, rows, cols) and feats.dtype == torch.float32
        assert not feats.requires_grad and bool(torch.isfinite(feats).all())
    assert not random_teacher.model.training
    assert not any(p.requires_grad for p in random_teacher.model.parameters())
    for key, value in random_teacher.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_random_init_is_seeded_and_leaves_the_global_rng(random_teacher: DinoTeacher) -> None:
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    with pytest.warns(UserWarning):
        same = DinoTeacher(TeacherConfig(name=NAME, image_height=HEIGHT), "cpu")
    assert torch.equal(torch.rand(3), expected_next)
    img = image(50, 120)
    assert torch.equal(same.features(img), random_teacher.features(img))


def test_accepts_a_tensor_image_and_refuses_other_types(random_teacher: DinoTeacher) -> None:
    img = image(50, 120)
    assert torch.equal(random_teacher.features(torch.from_numpy(img)),
                       random_teacher.features(img))
    with pytest.raises(ValueError, match="uint8"):
        random_teacher.features(img.astype(np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        random_teacher.features(img[:, :, :2])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_gives_that_models_features(tmp_path: Path, suffix: str,
                                                 random_teacher: DinoTeacher) -> None:
    reference = timm_dinov2(seed=123)
    path = tmp_path / f"dinov2{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    teacher = DinoTeacher(TeacherConfig(name=NAME, weights=str(path), image_height=HEIGHT),
                          "cpu")
    assert not teacher.random_weights
    img = image(50, 120, seed=1)
    x = teacher.preprocess(img)
    with torch.no_grad():
        tokens = reference.forward_features(x)[0, reference.num_prefix_tokens:]
    expected = tokens.T.reshape(384, x.shape[2] // 14, x.shape[3] // 14)
    feats = teacher.features(img)
    torch.testing.assert_close(feats, expected)
    assert not torch.allclose(feats, random_teacher.features(img))


def test_weights_of_another_model_are_refused_clearly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit_tiny.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match=rf"does not match the teacher {NAME}") as info:
        DinoTeacher(TeacherConfig(name=NAME, weights=str(path), image_height=HEIGHT), "cpu")
    message = str(info.value)
    assert "patch_embed.proj.weight" in message and "with another shape" in message
    assert "timm.create_model" in message  # says what to do


def test_unreadable_and_missing_weights(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable weights file"):
        DinoTeacher(TeacherConfig(name=NAME, weights=str(junk)), "cpu")
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DinoTeacher(TeacherConfig(name=NAME, weights=str(missing)), "cpu")
    with pytest.raises(ValueError, match="unknown teacher"):
        DinoTeacher(TeacherConfig(name="vit_huge"), "cpu")

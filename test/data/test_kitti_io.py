"""SemanticKITTI layout: reader(writer(x)) == x, and the reader parses the real byte layout."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd_ros.core.labels import COLOR_MAP_BGR, LEARNING_MAP, LEARNING_MAP_INV, RAW_LABELS
from tttkd_ros.data.camera import CameraConfig
from tttkd_ros.data.drive import SynthFrame, generate_drive
from tttkd_ros.data.kitti import read_label_map, read_sequence, write_label_map, write_sequence

SMALL = {"image_scale": 0.2, "lidar_beams": 16, "lidar_azimuth_res_deg": 1.0}

# calib.txt of KITTI odometry sequence 00, as distributed (P2 and P3 carry baselines).
REAL_CALIB = """\
P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.779761000000e-03
P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.915215000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01
"""
REAL_POSES = """\
1.000000e+00 9.043680e-12 2.326809e-11 5.551115e-17 9.043683e-12 1.000000e+00 2.392370e-10 3.330669e-16 2.326810e-11 2.392370e-10 9.999999e-01 -4.440892e-16
9.999978e-01 5.272628e-04 -2.066935e-03 -4.690294e-02 -5.296506e-04 9.999992e-01 -1.154865e-03 -2.839928e-02 2.066324e-03 1.155958e-03 9.999971e-01 8.586941e-01
"""
REAL_TIMES = "0.000000e+00\n1.036224e-01\n"


def _write_real_sequence(seq: Path, with_images: bool) -> dict:
    """Files byte for byte as SemanticKITTI has them: little-endian float32 x, y, z,
    remission; uint32 labels with the instance id in the upper 16 bits."""
    clouds = [[(12.5, -3.25, -1.5, 0.31), (4.0, 8.0, 0.5, 0.0), (-20.0, 1.0, -1.7, 0.99)],
              [(1.0, 2.0, 3.0, 0.5), (-4.5, 6.25, -1.0, 0.125)]]
    packed = [[10 | 5 << 16, 40, 252 | 7 << 16], [48, 30 | 2 << 16]]
    for name in ("velodyne", "labels"):
        (seq / name).mkdir(parents=True)
    for i, (cloud, labels) in enumerate(zip(clouds, packed)):
        (seq / "velodyne" / f"{i:06d}.bin").write_bytes(
            b"".join(struct.pack("<4f", *p) for p in cloud))
        (seq / "labels" / f"{i:06d}.label").write_bytes(struct.pack(f"<{len(labels)}I", *labels))
    (seq / "calib.txt").write_text(REAL_CALIB)
    (seq / "poses.txt").write_text(REAL_POSES)
    (seq / "times.txt").write_text(REAL_TIMES)
    image = (np.arange(8 * 12 * 3) % 251).astype(np.uint8).reshape(8, 12, 3)
    if with_images:  # frame 0 only: a frame without its PNG simply has no camera
        (seq / "image_2").mkdir()
        Image.fromarray(image).save(seq / "image_2" / "000000.png")
    return {"clouds": clouds, "packed": packed, "image": image}


def test_reads_real_semantickitti_files(tmp_path: Path) -> None:
    truth = _write_real_sequence(tmp_path / "sequences" / "00", with_images=True)
    seq = read_sequence(tmp_path, 0)
    assert len(seq) == 2
    first, second = seq[0], seq[-1]
    assert (first.index, second.index) == (0, 1)
    np.testing.assert_array_equal(first.points, np.array(truth["clouds"][0], np.float32))
    np.testing.assert_array_equal(first.labels, [10, 40, 252])
    np.testing.assert_array_equal(first.instances, [5, 0, 7])
    np.testing.assert_array_equal(second.labels, [48, 30])
    assert (first.stamp_ns, second.stamp_ns) == (0, 103_622_400)

    (camera,) = first.cameras
    assert camera.name == "camera" and second.cameras == []
    np.testing.assert_array_equal(camera.image, truth["image"])
    K = np.array([[718.856, 0, 607.1928], [0, 718.856, 185.2157], [0, 0, 1]])
    np.testing.assert_allclose(camera.K, K)
    Tr = np.vstack((np.array(REAL_CALIB.splitlines()[4].split()[1:], float).reshape(3, 4),
                    [0, 0, 0, 1]))
    # P2 = K [I | t]: t = K^-1 P2[:, 3], about 6 cm along x for cam2.
    t = np.array([(45.38225 - 607.1928 * 3.779761e-3) / 718.856,
                  (-0.1130887 - 185.2157 * 3.779761e-3) / 718.856, 3.779761e-3])
    offset = np.eye(4)
    offset[:3, 3] = t
    np.testing.assert_allclose(camera.T_cam_lidar, offset @ Tr, atol=1e-12)
    assert 0.05 < t[0] < 0.07

    cam0_pose = np.vstack((np.array(REAL_POSES.splitlines()[1].split(), float).reshape(3, 4),
                           [0, 0, 0, 1]))
    np.testing.assert_allclose(second.pose, np.linalg.inv(Tr) @ cam0_pose @ Tr, atol=1e-12)
    np.testing.assert_allclose(first.pose, np.eye(4), atol=1e-6)
    with pytest.raises(IndexError):
        seq[2]


def test_sequence_without_images_or_labels(tmp_path: Path) -> None:
    seq_dir = tmp_path / "sequences" / "11"
    _write_real_sequence(seq_dir, with_images=False)
    for label_file in (seq_dir / "labels").iterdir():
        label_file.unlink()
    (seq_dir / "labels").rmdir()
    frames = list(read_sequence(tmp_path, "11"))
    assert [f.cameras for f in frames] == [[], []]
    assert all(f.labels is None and f.instances is None for f in frames)
    assert frames[0].to_frame().cameras == []


@pytest.fixture(scope="module")
def stereo_drive() -> list[SynthFrame]:
    cam = CameraConfig(D=(-0.1, 0.02, 0.0005, -0.0005, 0.001))
    return list(generate_drive(frames=2, seed=4, cameras=(cam, cam.stereo_partner()), **SMALL))


def test_round_trip(tmp_path: Path, stereo_drive: list[SynthFrame]) -> None:
    assert write_sequence(tmp_path, "03", stereo_drive) == 2
    seq = read_sequence(tmp_path, 3)
    assert len(seq) == 2
    for original, back in zip(stereo_drive, seq, strict=True):
        np.testing.assert_array_equal(back.points, original.points)
        assert back.points.dtype == np.float32
        np.testing.assert_array_equal(back.labels, original.labels)
        np.testing.assert_array_equal(back.instances, np.zeros_like(original.labels))
        np.testing.assert_allclose(back.pose, original.pose, rtol=0, atol=1e-9)
        assert back.stamp_ns == original.stamp_ns
        assert back.index == original.index
        assert [v.name for v in back.cameras] == [v.name for v in original.cameras]
        for b, o in zip(back.cameras, original.cameras, strict=True):
            np.testing.assert_array_equal(b.image, o.image)
            np.testing.assert_allclose(b.K, o.K, rtol=0, atol=1e-9)
            np.testing.assert_allclose(b.T_cam_lidar, o.T_cam_lidar, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(b.D, o.D)


def test_rewriting_what_was_read_gives_the_same_bytes(tmp_path: Path,
                                                      stereo_drive: list[SynthFrame]) -> None:
    write_sequence(tmp_path / "a", 0, stereo_drive)
    write_sequence(tmp_path / "b", 0, read_sequence(tmp_path / "a", 0))
    for sub in ("velodyne/000001.bin", "labels/000001.label", "image_3/000001.png",
                "times.txt"):
        a = (tmp_path / "a" / "sequences" / "00" / sub).read_bytes()
        assert a == (tmp_path / "b" / "sequences" / "00" / sub).read_bytes(), sub


def test_instances_are_written_in_the_upper_bits(tmp_path: Path) -> None:
    _write_real_sequence(tmp_path / "src" / "sequences" / "00", with_images=True)
    write_sequence(tmp_path / "dst", 0, read_sequence(tmp_path / "src", 0))
    for i in range(2):
        name = f"sequences/00/labels/{i:06d}.label"
        assert (tmp_path / "dst" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()


def test_writer_rejects_cameras_kitti_cannot_express(tmp_path: Path) -> None:
    cams = (CameraConfig(), CameraConfig(name="side", rpy_deg=(0.0, 0.0, 60.0)))
    frames = generate_drive(frames=1, seed=0, cameras=cams, **SMALL)
    with pytest.raises(ValueError, match="rectified"):
        write_sequence(tmp_path, 0, frames)


def test_label_map_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "semantic-kitti.yaml"
    write_label_map(path)
    data = read_label_map(path)
    assert data["labels"] == RAW_LABELS
    assert data["learning_map"] == LEARNING_MAP
    assert data["learning_map_inv"] == LEARNING_MAP_INV
    assert {k: tuple(v) for k, v in data["color_map"].items()} == COLOR_MAP_BGR
    assert data["learning_ignore"][0] is True and not any(
        v for k, v in data["learning_ignore"].items() if k)

"""The shipped source model loads with the teacher every install can rebuild, and segments a
clean drive of the world it was trained in: the regression test of `models/`."""
from __future__ import annotations

import numpy as np
import pytest

from tttkd_ros.core.config import AdaptConfig, TeacherConfig
from tttkd_ros.core.labels import CLASS_NAMES, raw_to_train
from tttkd_ros.core.loading import load_engine
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.data.drive import render_frame
from tttkd_ros.data.shifts import get_shift
from tttkd_ros.models import shipped_source

GROUND = [CLASS_NAMES.index(n) for n in ("road", "parking", "sidewalk", "other-ground",
                                          "terrain")]


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_shipped_model_segments_a_clean_frame() -> None:
    path = shipped_source()
    checkpoint = load_checkpoint(path, "cpu")
    record = checkpoint.teacher
    assert record["weights"] == "random:0" and record["image_height"] == 112
    # the class mix test-time normalisation weighs towards: the world's ground and buildings
    # and vegetation dominate its voxels, and every share is a share
    shares = checkpoint.class_shares
    assert shares is not None and abs(float(shares.sum()) - 1.0) < 1e-5
    common = {CLASS_NAMES[i] for i in shares.argsort(descending=True)[:4].tolist()}
    assert common <= {"road", "sidewalk", "building", "vegetation", "terrain"}
    loaded = load_engine(str(path), AdaptConfig(mode="none"), TeacherConfig(image_height=112),
                         "cpu")
    frame = render_frame(get_shift("clean", image_scale=0.25), seed=20, index=0)
    pred = loaded.engine.process(frame.to_frame())
    truth = raw_to_train(frame.labels)
    cm = ConfusionMatrix(len(CLASS_NAMES))
    cm.update(truth, pred.labels)
    assert cm.miou() > 45.0
    # what lies well below the sensor is ground, as the real-scan check asks of KITTI scans
    low = frame.points[:, 2] < -1.4
    assert np.isin(pred.labels[low], GROUND).mean() > 0.8

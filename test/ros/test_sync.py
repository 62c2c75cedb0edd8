"""FrameSynchronizer: pairing rules, timeouts, queues, clock jumps and output order.

Messages are plain strings: the synchroniser only looks at the stamps it is given.
"""
from __future__ import annotations

import pytest

from tttkd_ros.ros.sync import FrameSynchronizer, SyncedFrame

MS = 1_000_000
T0 = 100_000 * MS  # 100 s


def feed_camera(sync: FrameSynchronizer, cam: str, stamp: int, info: bool = True) -> None:
    sync.add_image(cam, stamp, f"{cam}-img@{stamp}")
    if info:
        sync.add_camera_info(cam, stamp, f"{cam}-info@{stamp}")


def only(frames: list[SyncedFrame]) -> SyncedFrame:
    assert len(frames) == 1, frames
    return frames[0]


def test_exact_pairing_releases_at_once() -> None:
    sync = FrameSynchronizer(["cam"])
    sync.add_cloud(T0, "cloud", T0)
    assert sync.poll(T0) == []  # nothing from the camera yet
    feed_camera(sync, "cam", T0)
    frame = only(sync.poll(T0))
    pair = frame.cameras["cam"]
    assert (frame.stamp_ns, frame.cloud) == (T0, "cloud")
    assert (pair.image, pair.info, pair.image_stamp_ns, pair.info_exact) == (
        f"cam-img@{T0}", f"cam-info@{T0}", T0, True)
    assert sync.stats()["frames_complete"] == 1 and sync.stats()["frames_timed_out"] == 0


def test_approximate_pairing_picks_the_nearest_image_within_slop() -> None:
    sync = FrameSynchronizer(["cam"], slop_s=0.05)
    sync.add_cloud(T0, "cloud", T0)
    for dt in (-40, -15):
        feed_camera(sync, "cam", T0 + dt * MS)
    assert sync.poll(T0) == []  # a nearer image stamped after the cloud may still come
    feed_camera(sync, "cam", T0 + 10 * MS)
    feed_camera(sync, "cam", T0 + 45 * MS)
    pair = only(sync.poll(T0 + 50 * MS)).cameras["cam"]
    assert pair.image_stamp_ns == T0 + 10 * MS and pair.image == f"cam-img@{T0 + 10 * MS}"
    assert pair.info == f"cam-info@{T0 + 10 * MS}"


def test_image_just_inside_slop_pairs_and_just_outside_does_not() -> None:
    sync = FrameSynchronizer(["cam"], slop_s=0.05)
    sync.add_cloud(T0, "inside", T0)
    feed_camera(sync, "cam", T0 + 50 * MS)
    assert only(sync.poll(T0 + 50 * MS)).cameras["cam"].image_stamp_ns == T0 + 50 * MS

    sync.add_cloud(T0 + 200 * MS, "outside", T0 + 200 * MS)
    feed_camera(sync, "cam", T0 + 251 * MS)  # 51 ms after the cloud
    frame = only(sync.poll(T0 + 251 * MS))  # settled: no nearer image can follow
    assert frame.cloud == "outside" and frame.missing == ["cam"]
    stats = sync.stats()
    assert stats["frames_lidar_only"] == 1 and stats["frames_timed_out"] == 0


def test_timeout_releases_a_lidar_only_frame() -> None:
    sync = FrameSynchronizer(["cam"], timeout_s=0.2)
    sync.add_cloud(T0, "cloud", T0)
    assert sync.poll(T0 + 200 * MS) == []  # not yet *more* than the timeout
    frame = only(sync.poll(T0 + 201 * MS))
    assert frame.cameras == {"cam": None} and frame.missing == ["cam"]
    stats = sync.stats()
    assert stats["frames_lidar_only"] == 1 and stats["frames_timed_out"] == 1


def test_timeout_uses_the_best_image_seen_so_far() -> None:
    sync = FrameSynchronizer(["cam"], timeout_s=0.2)
    sync.add_cloud(T0, "cloud", T0)
    feed_camera(sync, "cam", T0 - 20 * MS)  # before the cloud: a better one could still come
    assert sync.poll(T0 + 100 * MS) == []
    pair = only(sync.poll(T0 + 201 * MS)).cameras["cam"]
    assert pair.image_stamp_ns == T0 - 20 * MS
    assert sync.stats()["frames_complete"] == 1 and sync.stats()["frames_timed_out"] == 1


def test_latest_camera_info_stands_in_when_no_stamp_matches() -> None:
    sync = FrameSynchronizer(["cam"])
    sync.add_camera_info("cam", T0 - 1000 * MS, "old-info")
    sync.add_camera_info("cam", T0 - 500 * MS, "latest-info")
    sync.add_cloud(T0, "cloud", T0)
    feed_camera(sync, "cam", T0, info=False)
    # an info with the image's stamp may still arrive: wait for it ...
    assert sync.poll(T0) == []
    # ... until a later-stamped info shows it never will
    sync.add_camera_info("cam", T0 + 5 * MS, "newer-info")
    pair = only(sync.poll(T0 + 5 * MS)).cameras["cam"]
    assert (pair.info, pair.info_exact) == ("newer-info", False)


def test_latest_camera_info_is_used_at_timeout() -> None:
    sync = FrameSynchronizer(["cam"], timeout_s=0.2)
    sync.add_camera_info("cam", T0 - 900 * MS, "calibration")
    sync.add_cloud(T0, "cloud", T0)
    feed_camera(sync, "cam", T0, info=False)
    pair = only(sync.poll(T0 + 201 * MS)).cameras["cam"]
    assert (pair.image, pair.info, pair.info_exact) == (f"cam-img@{T0}", "calibration", False)


def test_camera_without_any_info_is_missing() -> None:
    sync = FrameSynchronizer(["cam"], timeout_s=0.2)
    sync.add_cloud(T0, "cloud", T0)
    feed_camera(sync, "cam", T0, info=False)
    assert sync.poll(T0 + 100 * MS) == []
    assert only(sync.poll(T0 + 201 * MS)).missing == ["cam"]


def test_several_cameras_wait_for_each_other() -> None:
    sync = FrameSynchronizer(["front", "left", "right"], timeout_s=0.2)
    sync.add_cloud(T0, "c0", T0)
    feed_camera(sync, "front", T0 + 3 * MS)
    feed_camera(sync, "left", T0 - 2 * MS)
    feed_camera(sync, "left", T0 + 30 * MS)
    assert sync.poll(T0 + 30 * MS) == []  # right has sent nothing
    feed_camera(sync, "right", T0 + 1 * MS)
    frame = only(sync.poll(T0 + 31 * MS))
    assert list(frame.cameras) == ["front", "left", "right"]
    assert [frame.cameras[c].image_stamp_ns for c in frame.cameras] == [
        T0 + 3 * MS, T0 - 2 * MS, T0 + 1 * MS]

    sync.add_cloud(T0 + 100 * MS, "c1", T0 + 100 * MS)
    feed_camera(sync, "front", T0 + 100 * MS)
    frame = only(sync.poll(T0 + 301 * MS))  # left and right never answer
    assert frame.missing == ["left", "right"] and frame.cameras["front"] is not None
    assert sync.stats()["frames_partial"] == 1 and sync.stats()["frames_complete"] == 1


def test_cloud_queue_overflow_drops_the_oldest() -> None:
    sync = FrameSynchronizer([], queue_size=3)
    for k in range(5):
        sync.add_cloud(T0 + k * 100 * MS, f"c{k}", T0 + k * 100 * MS)
    assert [f.cloud for f in sync.poll(T0 + 500 * MS)] == ["c2", "c3", "c4"]
    stats = sync.stats()
    assert stats["dropped"]["cloud"] == 2 and stats["frames_dropped"] == 2
    assert stats["frames_complete"] == 3  # no cameras configured: every frame is complete


def test_image_queue_overflow_drops_the_oldest() -> None:
    sync = FrameSynchronizer(["cam"], queue_size=3, timeout_s=0.2)
    for k in range(5):
        feed_camera(sync, "cam", T0 + k * 10 * MS)
    sync.add_cloud(T0, "cloud", T0)  # its exact image was pushed out of the queue
    pair = only(sync.poll(T0 + 50 * MS)).cameras["cam"]
    assert pair.image_stamp_ns == T0 + 20 * MS
    assert sync.stats()["dropped"]["cam/image"] == 2
    assert sync.stats()["dropped"]["cam/camera_info"] == 2


def test_clock_jump_back_clears_queues() -> None:
    sync = FrameSynchronizer(["cam"], slop_s=0.05, timeout_s=0.2)
    sync.add_camera_info("cam", T0 - 10 * MS, "calibration")
    sync.add_cloud(T0, "before-loop", T0)
    sync.add_image("cam", T0 - 40 * MS, "img-before-loop")
    # 1 s + slop back is not yet a jump ...
    sync.add_cloud(T0 - 1050 * MS, "reordered", T0 - 1050 * MS)
    assert sync.stats()["clock_jumps"] == 0
    # ... further back is: the bag looped
    loop = T0 - 60_000 * MS
    sync.add_cloud(loop, "after-loop", loop)
    stats = sync.stats()
    assert stats["clock_jumps"] == 1 and stats["pending_clouds"] == 1
    assert stats["frames_dropped"] == 2 and stats["dropped"]["cam/image"] == 1
    sync.add_image("cam", loop, "img-after-loop")
    assert sync.poll(loop) == []  # its own CameraInfo may still come
    frame = only(sync.poll(loop + 201 * MS))
    # the pre-loop cloud never comes out; the kept calibration still serves the new image
    assert frame.cloud == "after-loop"
    assert (frame.cameras["cam"].image, frame.cameras["cam"].info) == ("img-after-loop",
                                                                       "calibration")


def test_the_timeout_runs_from_the_clouds_arrival_not_its_stamp() -> None:
    """Stamps 5 s behind the receiver's clock (a bag played without --clock, a LiDAR without
    PTP): an image arriving 10 ms after its cloud still pairs, and the cloud waits `timeout`
    from its arrival before it goes LiDAR-only."""
    lag = 5000 * MS
    sync = FrameSynchronizer(["cam"], slop_s=0.05, timeout_s=0.2)
    sync.add_cloud(T0, "c0", T0 + lag)
    assert sync.poll(T0 + lag) == []  # 5 s past its stamp, but it has only just arrived
    feed_camera(sync, "cam", T0)
    assert only(sync.poll(T0 + lag + 10 * MS)).cameras["cam"].image == f"cam-img@{T0}"
    sync.add_cloud(T0 + 100 * MS, "c1", T0 + lag + 100 * MS)  # its camera never comes
    assert sync.poll(T0 + lag + 300 * MS) == []  # not yet *more* than the timeout
    assert only(sync.poll(T0 + lag + 301 * MS)).missing == ["cam"]
    assert sync.stats()["clock_jumps"] == 0 and sync.stats()["frames_timed_out"] == 1


def test_frames_come_out_in_stamp_order_and_late_clouds_are_dropped() -> None:
    sync = FrameSynchronizer([], timeout_s=0.2)
    for k in (2, 0, 1):
        sync.add_cloud(T0 + k * 100 * MS, f"c{k}", T0 + k * 100 * MS)
    assert [f.stamp_ns for f in sync.poll(T0 + 200 * MS)] == [T0, T0 + 100 * MS, T0 + 200 * MS]
    sync.add_cloud(T0 + 150 * MS, "late", T0 + 150 * MS)  # older than what was already released
    sync.add_cloud(T0 + 300 * MS, "c3", T0 + 300 * MS)
    assert [f.cloud for f in sync.poll(T0 + 300 * MS)] == ["c3"]
    assert sync.stats()["dropped"]["cloud"] == 1


def test_a_later_camera_message_settles_older_clouds_in_order() -> None:
    sync = FrameSynchronizer(["cam"], timeout_s=0.2)
    sync.add_cloud(T0, "c0", T0)
    sync.add_cloud(T0 + 100 * MS, "c1", T0 + 100 * MS)
    assert sync.poll(T0 + 100 * MS) == []
    feed_camera(sync, "cam", T0 + 100 * MS)  # too late for c0: it can have no match now
    frames = sync.poll(T0 + 100 * MS)
    assert [f.cloud for f in frames] == ["c0", "c1"]
    assert frames[0].missing == ["cam"] and frames[1].missing == []
    assert sync.stats()["frames_timed_out"] == 0


def test_flush_releases_everything_pending() -> None:
    sync = FrameSynchronizer(["cam"])
    sync.add_cloud(T0, "c0", T0)
    feed_camera(sync, "cam", T0 - 10 * MS)
    sync.add_cloud(T0 + 100 * MS, "c1", T0 + 100 * MS)
    frames = sync.flush()
    assert [f.cloud for f in frames] == ["c0", "c1"]
    assert frames[0].cameras["cam"].image_stamp_ns == T0 - 10 * MS and frames[1].missing == ["cam"]
    assert sync.stats()["frames_timed_out"] == 0 and sync.stats()["pending_clouds"] == 0


def test_stats_count_inputs_and_stamp_gaps() -> None:
    sync = FrameSynchronizer(["cam"])
    for k in range(3):
        sync.add_cloud(T0 + k * 100 * MS, "c", T0 + k * 100 * MS)
        feed_camera(sync, "cam", T0 + k * 33 * MS)
    stats = sync.stats()
    assert stats["received"] == {"cloud": 3, "cam/image": 3, "cam/camera_info": 3}
    assert stats["last_gap_ns"] == {"cloud": 100 * MS, "cam/image": 33 * MS,
                                    "cam/camera_info": 33 * MS}


def test_clear_empties_queues_and_counts_drops() -> None:
    sync = FrameSynchronizer(["cam"])
    sync.add_cloud(T0, "c0", T0)
    feed_camera(sync, "cam", T0 + 60 * MS)
    sync.clear()
    assert sync.poll(T0 + 1000 * MS) == []
    stats = sync.stats()
    assert stats["dropped"] == {"cloud": 1, "cam/image": 1, "cam/camera_info": 1}


def test_unknown_camera_and_bad_settings_are_refused() -> None:
    sync = FrameSynchronizer(["cam"])
    with pytest.raises(KeyError, match="unknown camera 'other'"):
        sync.add_image("other", T0, "img")
    with pytest.raises(ValueError, match="unique"):
        FrameSynchronizer(["cam", "cam"])
    with pytest.raises(ValueError, match="queue_size >= 1"):
        FrameSynchronizer(["cam"], queue_size=0)

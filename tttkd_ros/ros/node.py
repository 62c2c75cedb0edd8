"""`adapt_node`: synchronized LiDAR + cameras in, adapted segmentation out.

Thin wiring: messages -> FrameSynchronizer -> latest-frame worker -> numpy Frame ->
AdaptationEngine -> numpy Prediction -> messages. Subscription callbacks only queue
messages; conversion, the model and publishing run on the worker thread.

A defective input never takes the node down: each defect (unreadable message, zero or
out-of-order stamp, frame_id other than the configured one, NaN points, empty or oversized
cloud) is counted in /diagnostics and logged, throttled per input and kind of defect, and
the rest of the frame (or the next frame) is processed as usual.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import fields, replace
from functools import partial

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool, Trigger

from ..core.augment import moved_frame
from ..core.config import MODE_PRESETS, AdaptConfig
from ..core.device.selection import resolve_device
from ..core.frame import UNLABELED, CameraView, Frame, FrameStats
from ..core.loading import load_engine, warm_up
from .convert import (
    ConversionError,
    any_image_to_rgb,
    camera_info_to_calib,
    camera_view,
    check_image_matches_info,
    pointcloud2_to_xyzi,
    rectified_from_topic,
)
from .dds_env import discovery_summary, use_large_message_profile
from .diagnostics import DefectLog, DiagnosticsReporter, Health, process_rss_mb
from .extrinsics import Extrinsics, ExtrinsicsError, TfExtrinsics, tf_available
from .outputs import (
    class_map_message,
    colored_cloud,
    label_info_message,
    labeled_cloud,
    mask_color_image,
    mask_image,
    stats_message,
)
from .params import (
    NODE_NAME,
    AdaptationUpdate,
    adaptation_update,
    declare_and_read,
    effective_adaptation,
    parse_palette,
)
from .sync import CameraPair, FrameSynchronizer, SyncedFrame
from .worker import LatestFrameWorker

POLL_PERIOD_S = 0.02  # how often pending clouds are checked against the sync timeout
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0  # the same defect on the same input is logged at most this often
_NS = 1_000_000_000


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class AdaptNode(Node):
    """The adaptation node; `kwargs` go to rclpy's Node (e.g. parameter_overrides)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        s = self.settings = declare_and_read(self)
        device = resolve_device(s.device)
        t0 = time.perf_counter()
        # the parameters' adaptation settings; the engine runs them with the mode's preset
        self.configured, self.mode_presets = s.adapt, s.mode_presets
        loaded = load_engine(s.checkpoint, effective_adaptation(s.adapt, s.mode_presets),
                             s.teacher, device)
        self.engine, self.class_names = loaded.engine, loaded.class_names
        palette = parse_palette(s.palette, len(loaded.class_names))
        self.palette = loaded.palette if palette is None else palette
        warm_up(self.engine)
        self.engine.enabled = s.enabled
        load_s = time.perf_counter() - t0

        self.health = Health(teacher_name=s.teacher.name,
                             teacher_random=bool(self.engine.teacher.random_weights),
                             enabled=s.enabled, mode=s.adapt.mode)
        self.reporter = DiagnosticsReporter(self.get_name(), hardware_id=str(device))
        self.extrinsics = Extrinsics(s.extrinsics, self._tf_source())
        self.sync = FrameSynchronizer(s.cameras, s.slop, s.queue_size, s.sync_timeout)
        self.rectified: dict[str, bool] = {}  # camera -> image is rectified; _make_interfaces
        self.sync_lock = threading.Lock()
        self.defects = DefectLog(self.health, LOG_THROTTLE_S)
        # a cloud older than the newest by more than this is a clock jump for the sync
        self._jump_ns = round(s.slop * _NS) + _NS
        self._newest_cloud_ns: int | None = None
        self._clock_jumps_seen = 0
        self.worker = LatestFrameWorker(self._process, self._on_failure)
        self._make_interfaces()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.health.teacher_random:
            self.get_logger().warn(
                "teacher has RANDOM weights (teacher.weights is empty): distillation targets "
                "carry no semantics; set teacher.weights to a DINOv2 weights file")
        self.get_logger().info(
            f"ready: {s.checkpoint} on {device}, loaded and warmed up in {load_s:.1f} s; "
            f"cameras {s.cameras}, mode {s.adapt.mode}, adaptation "
            f"{'on' if s.enabled else 'off'}, budget {s.adapt.budget_ms} ms{self._preset_note()}")

    # -- wiring --------------------------------------------------------------------------

    def _tf_source(self) -> TfExtrinsics | None:
        s = self.settings
        if not s.use_tf:
            return None
        if not tf_available():
            self.get_logger().warn("use_tf is true but tf2_ros is not installed: using the "
                                   "CAM.xyz / CAM.quat parameters")
            return None
        return TfExtrinsics(self, s.tf_timeout, s.tf_static)

    def _make_interfaces(self) -> None:
        s = self.settings
        qin, qout = s.qos_in.profile(), s.qos_out.profile()
        # sensors + sync, never two at once, should the node be spun by a multi-threaded
        # executor (tests, a user's container); main() spins it on one thread
        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(PointCloud2, "points", self._on_cloud, qin,
                                 callback_group=group)
        for cam in s.cameras:
            compressed = s.camera_transports[cam] == "compressed"
            image = self.create_subscription(
                CompressedImage if compressed else Image,
                f"{cam}/image/compressed" if compressed else f"{cam}/image",
                partial(self._on_image, cam), qin, callback_group=group)
            self.rectified[cam] = rectified_from_topic(s.camera_rectified[cam], image.topic_name)
            kind = ("rectified image (CameraInfo R, P)" if self.rectified[cam]
                    else "raw image (CameraInfo K, D)")
            self.get_logger().info(f"camera '{cam}': {image.topic_name} is projected as a "
                                   f"{kind} ({cam}.rectified: {s.camera_rectified[cam]})")
            self.create_subscription(CameraInfo, f"{cam}/camera_info",
                                     partial(self._on_camera_info, cam), qin,
                                     callback_group=group)
        self.pub_labeled = self.create_publisher(PointCloud2, "~/labeled_points", qout)
        self.pub_colored = self.create_publisher(PointCloud2, "~/colored_points", qout)
        self.pub_masks = {cam: (self.create_publisher(Image, f"~/{cam}/mask", qout),
                                self.create_publisher(Image, f"~/{cam}/mask_color", qout))
                          for cam in s.cameras}
        self.pub_stats = self.create_publisher(String, "~/stats", qout)
        self._publish_class_map()
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/enable_adaptation", self._on_enable)
        # Steady timers: they must fire while sim time stands still (a paused bag).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(POLL_PERIOD_S, self._poll, callback_group=group, clock=steady)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
                          callback_group=group, clock=steady)

    def _publish_class_map(self) -> None:
        """The id -> name -> colour map, latched: a consumer that starts later still gets it.
        Also as vision_msgs/LabelInfo (ids and names) where vision_msgs is installed."""
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_class_map = self.create_publisher(String, "~/class_map", latched)
        self.pub_class_map.publish(class_map_message(self.class_names, self.palette))
        info = label_info_message(self.class_names, Header(stamp=self.get_clock().now().to_msg()))
        if info is not None:
            self.pub_label_info = self.create_publisher(type(info), "~/label_info", latched)
            self.pub_label_info.publish(info)

    def destroy_node(self) -> None:
        self.worker.stop()
        self.engine.close()  # an adaptation in flight finishes; its thread stops
        super().destroy_node()

    # -- inputs (executor threads) -------------------------------------------------------

    def _locked(self, fn, *args) -> None:
        with self.sync_lock:
            fn(*args)

    def _stamp(self, source: str, msg) -> int | None:
        """The message's stamp in ns, or None (a logged defect) when it is zero."""
        stamp = stamp_ns(msg.header.stamp)
        if stamp == 0:
            self._defect(source, "header stamp is zero (the driver does not stamp its "
                         "messages); message dropped")
            return None
        return stamp

    def _on_image(self, cam: str, msg: Image | CompressedImage) -> None:
        stamp = self._stamp(f"{cam}/image", msg)
        if stamp is not None:
            self._locked(self.sync.add_image, cam, stamp, msg)

    def _on_camera_info(self, cam: str, msg: CameraInfo) -> None:
        stamp = self._stamp(f"{cam}/camera_info", msg)
        if stamp is not None:
            self._locked(self.sync.add_camera_info, cam, stamp, msg)

    def _on_cloud(self, msg: PointCloud2) -> None:
        stamp = self._stamp("points", msg)
        if stamp is None:
            return
        newest = self._newest_cloud_ns
        if newest is not None and newest - self._jump_ns <= stamp < newest:
            self._defect("points", f"stamp {stamp * 1e-9:.3f} s is older than the previous "
                         f"cloud's {newest * 1e-9:.3f} s (out of order); cloud dropped")
            return
        self._newest_cloud_ns = stamp  # a step back beyond _jump_ns: a clock jump (the sync's)
        self._locked(self.sync.add_cloud, stamp, msg, time.monotonic_ns())
        self._poll()

    def _poll(self) -> None:
        # the sync timeout runs from each cloud's arrival on this steady clock: stamps that lag
        # the node clock (a bag played without --clock, a LiDAR without PTP) still pair
        now = time.monotonic_ns()
        with self.sync_lock:
            frames = self.sync.poll(now)
        for frame in frames:
            self.worker.submit(frame)

    # -- processing (worker thread) ------------------------------------------------------

    def _process(self, synced: SyncedFrame) -> None:
        header = synced.cloud.header
        jump_reset = self._handle_clock_jump()
        defects: list[str] = []
        try:
            cloud = pointcloud2_to_xyzi(synced.cloud)
        except ConversionError as exc:
            self._defect("points", f"{exc}; cloud skipped")
            return
        defects += self._check_points(cloud.points)
        views, image_headers = [], {}
        lidar = self.settings.lidar_frame
        if lidar and header.frame_id != lidar:
            defects.append(self._defect(
                "points", f"frame_id '{header.frame_id}' is not lidar_frame '{lidar}', the "
                "frame the camera extrinsics are for; processed without cameras"))
        else:
            for cam, pair in synced.cameras.items():
                if pair is None:
                    defects.append(self._defect(f"{cam}/image", self._missing_camera_text()))
                    continue
                view = self._camera_view(cam, pair, header.frame_id, synced.stamp_ns, defects)
                if view is not None:
                    views.append(view)
                    image_headers[cam] = pair.image.header
        frame = Frame(points=cloud.points, cameras=views, stamp_ns=synced.stamp_ns,
                      frame_id=header.frame_id, intensity_max=cloud.intensity_max)
        to_sensor = self._cloud_to_sensor(header.frame_id, synced.stamp_ns)
        if to_sensor is None:
            return  # the defect is logged: a cloud in the wrong frame would be mislabeled
        pred = self.engine.process(moved_frame(frame, to_sensor))  # outputs: the cloud's own
        if "points_subsampled" in pred.stats.events:
            defects.append(self._defect(
                "points", f"{len(cloud.points)} points, over max_points "
                f"{self.engine.cfg.max_points}: the model saw a grid subsample, every point "
                "is still labeled"))
        if "intensity_out_of_range" in pred.stats.events and not self.health.intensity_warning:
            self._warn_intensity()
        if jump_reset:
            pred.stats.events.insert(0, "clock_jump_reset")
        if self.pub_labeled.get_subscription_count():
            self.pub_labeled.publish(labeled_cloud(header, cloud, pred))
        if self.pub_colored.get_subscription_count():
            self.pub_colored.publish(colored_cloud(header, cloud, pred.labels, self.palette))
        for cam, mask in pred.masks.items():
            pub_mask, pub_color = self.pub_masks[cam]
            if pub_mask.get_subscription_count():
                pub_mask.publish(mask_image(image_headers[cam], mask))
            if pub_color.get_subscription_count():
                pub_color.publish(mask_color_image(image_headers[cam], mask, self.palette))
        self._record(pred.stats, views)
        e = self.engine
        self.pub_stats.publish(stats_message(
            synced.stamp_ns, header.frame_id, pred.stats, points=len(cloud.points),
            cameras=[v.name for v in views], lidar_only=not views, dropped=self.worker.dropped,
            enabled=e.enabled, mode=e.cfg.mode, resets=e.resets,
            event_counts=dict(e.event_counts), input_defects=defects))

    def _cloud_to_sensor(self, cloud_frame: str, stamp: int) -> np.ndarray | None:
        """T_sensor_cloud: into the LiDAR frame the model was trained in, by tf2 when
        `sensor_frame` is set and use_tf is on, else cloud_to_sensor; None (a defect of the
        cloud) when tf2 has no transform."""
        s = self.settings
        tf = self.extrinsics.tf
        if not s.sensor_frame or tf is None or cloud_frame == s.sensor_frame:
            return s.cloud_to_sensor
        try:
            return tf.lookup(s.sensor_frame, cloud_frame, stamp)
        except ExtrinsicsError as exc:
            self._defect("points", f"{exc} (sensor_frame '{s.sensor_frame}'); cloud skipped")
            return None

    def _warn_intensity(self) -> None:
        """Once: the input's intensity, scaled, still disagrees with the checkpoint's (the
        engine's figures, and what to set); /diagnostics keeps saying it."""
        e = self.engine
        factor, p99 = e.intensity_mismatch
        trained = e.intensity.p99
        self.health.intensity_warning = (
            f"input intensity x {factor:.4g} (intensity_scale "
            f"{e.cfg.intensity_scale or 'auto'}) has a 99th percentile of "
            f"{p99:.3g}; the checkpoint was trained on "
            f"0..{e.intensity.range:g}" + (f" (99th percentile {trained:.3g})" if trained else "")
            + ": set intensity_scale to the factor that maps this sensor's units onto the "
            "checkpoint's (e.g. 0.003922 for 0..255 into 0..1), or train on this sensor")
        self.get_logger().warn(self.health.intensity_warning)

    def _missing_camera_text(self) -> str:
        s = self.settings
        return (f"no image (with a CameraInfo) stamped within sync.slop {s.slop} s of the cloud "
                f"came within sync.timeout {s.sync_timeout} s of the cloud's arrival; frame "
                "processed without this camera (if images are large and the input QoS is "
                "best_effort, see the README on large messages)")

    def _handle_clock_jump(self) -> bool:
        """Reset the engine (when configured) once per clock jump the sync has seen; True
        when it reset. Runs on the worker, between frames."""
        with self.sync_lock:
            jumps = self.sync.stats()["clock_jumps"]
        if jumps == self._clock_jumps_seen:
            return False
        self._clock_jumps_seen = jumps
        if not self.engine.clock_jumped():
            return False
        self.get_logger().warn("time jumped backwards (looped bag?): sync queues cleared, "
                               "adaptation reset to the source weights")
        return True

    def _check_points(self, points: np.ndarray) -> list[str]:
        """Defects of a decoded (N, 4) cloud the engine copes with: empty, non-finite values."""
        if len(points) == 0:
            return [self._defect("points", "empty cloud (0 points); published empty")]
        bad = len(points) - int(np.isfinite(points).all(axis=1).sum())
        if bad:
            return [self._defect("points", f"{bad} of {len(points)} points have NaN/Inf "
                                 f"values; left out of the model and labeled {UNLABELED}")]
        return []

    def _camera_view(self, cam: str, pair: CameraPair, lidar_frame: str, stamp: int,
                     defects: list[str]) -> CameraView | None:
        """The camera's part of the Frame, or None when it is unusable (the defect is logged,
        counted and appended to `defects`)."""
        unused = "; frame processed without this camera"
        expected = self.settings.camera_frames[cam]
        camera_frame = pair.image.header.frame_id
        if expected and camera_frame != expected:
            defects.append(self._defect(
                f"{cam}/image", f"frame_id '{camera_frame}' is not {cam}.frame_id "
                f"'{expected}', the frame its extrinsic is for{unused}"))
            return None
        try:
            rgb = any_image_to_rgb(pair.image)
        except ConversionError as exc:
            defects.append(self._defect(f"{cam}/image", f"{exc}{unused}"))
            return None
        try:
            calib = camera_info_to_calib(pair.info, self.rectified[cam])
            check_image_matches_info(rgb.shape[:2], calib)
        except ConversionError as exc:
            defects.append(self._defect(f"{cam}/camera_info", f"{exc}{unused}"))
            return None
        try:
            T = self.extrinsics.get(cam, camera_frame, lidar_frame, stamp)
        except ExtrinsicsError as exc:
            defects.append(self._defect(f"{cam}/extrinsics", f"{exc}{unused}"))
            return None
        return camera_view(cam, rgb, calib, T, camera_frame)

    def _record(self, stats: FrameStats, views: list[CameraView]) -> None:
        h, e = self.health, self.engine
        h.frames += 1
        h.last_total_ms = stats.teacher_ms + stats.guard_ms + stats.adapt_ms + stats.infer_ms
        for cam in stats.cameras_untrusted:
            h.untrusted_cameras[cam] = h.untrusted_cameras.get(cam, 0) + 1
        h.last_budget_ms = stats.budget_ms
        h.consecutive_overruns = h.consecutive_overruns + 1 if stats.over_budget else 0
        h.discarded_steps += sum(ev.endswith("discarded") for ev in stats.events)
        h.event_counts = dict(e.event_counts)
        h.lidar_only += not views
        h.dropped, h.resets = self.worker.dropped, e.resets
        h.enabled, h.mode = e.enabled, e.cfg.mode

    def _defect(self, source: str, text: str) -> str:
        """Count a defect of input `source`, log it (throttled) and return "source: text"."""
        count = self.defects.record(source, text, time.monotonic())
        if count is not None:
            self.get_logger().warn(f"{source}: {text} ({count} defect(s) on this input)")
        return f"{source}: {text}"

    def _on_failure(self, synced: SyncedFrame, exc: BaseException) -> None:
        self.health.failed += 1
        self.health.last_failure = f"{type(exc).__name__}: {exc}"
        self.get_logger().error(f"frame at {synced.stamp_ns * 1e-9:.3f} s failed: "
                                f"{self.health.last_failure}")

    # -- diagnostics, services, parameters -------------------------------------------------

    def _publish_diagnostics(self) -> None:
        with self.sync_lock:
            self.health.sync = self.sync.stats()
        self.health.dropped = self.worker.dropped
        self.health.rss_mb = process_rss_mb()
        device = self.engine.device
        if device.type == "cuda":
            self.health.gpu_allocated_mb = torch.cuda.memory_allocated(device) / 2**20
            self.health.gpu_reserved_mb = torch.cuda.memory_reserved(device) / 2**20
        self.pub_diag.publish(self.reporter.message(self.health,
                                                    self.get_clock().now().to_msg()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        self.worker.exclusive(self.engine.reset)
        self.health.resets = self.engine.resets
        response.success = True
        response.message = f"back to the source weights (reset {self.engine.resets})"
        self.get_logger().info(response.message)
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response
                   ) -> SetBool.Response:
        # Through the parameter, so `ros2 param get` agrees with the service.
        result = self.set_parameters([Parameter("adaptation.enabled", value=request.data)])[0]
        response.success = result.successful
        response.message = (f"adaptation {'enabled' if request.data else 'disabled'}"
                            if result.successful else result.reason)
        return response

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        try:
            update = adaptation_update(params, self.configured)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if update:
            self.worker.exclusive(lambda: self._apply(update))
        return SetParametersResult(successful=True)

    def _preset_note(self) -> str:
        preset = MODE_PRESETS.get(self.configured.mode) if self.mode_presets else None
        return f"; the {self.configured.mode} preset: {preset}" if preset else ""

    def _apply(self, update: AdaptationUpdate) -> None:
        self.configured = replace(self.configured, **update.changes)
        if update.mode_presets is not None:
            self.mode_presets = update.mode_presets
        target = effective_adaptation(self.configured, self.mode_presets)
        changes = {f.name: getattr(target, f.name) for f in fields(AdaptConfig)
                   if getattr(target, f.name) != getattr(self.engine.cfg, f.name)}
        if changes:
            self.engine.configure(**changes)
            self.health.mode = self.engine.cfg.mode
        if update.enabled is not None:
            self.engine.enabled = update.enabled
            self.health.enabled = update.enabled
        self.get_logger().info(f"adaptation updated: {update}{self._preset_note()}")


def main(args: list[str] | None = None) -> int:
    """Console script `adapt_node`; ROS arguments (--ros-args ...) come from sys.argv."""
    profile = use_large_message_profile()  # discovery stays as the user's environment says
    rclpy.init(args=args)
    log = get_logger(NODE_NAME)
    log.info(f"DDS discovery: {discovery_summary()}")
    if profile:
        log.info(f"Fast DDS profile: {profile}")
    try:
        node = AdaptNode()
    except (ValueError, FileNotFoundError, RuntimeError, ParameterException) as exc:
        # a setting the user can fix: say which, without a traceback
        get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    # One thread: the callbacks only queue work (the model runs on the worker thread), and
    # with rclpy's multi-threaded executor (3 threads) some input callbacks ran 1-4 s after
    # the player published the message (`tttkd demo` on a 2-core machine: latency p99 3-4 s
    # against 0.2-1.2 s with one thread; README, "What `tttkd demo` does and prints"). A
    # service call waits at most for the frame in progress.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # Ctrl-C's handler shuts the context down while the executor may be building its
        # wait set, which then raises RCLError instead of ExternalShutdownException (a known
        # rclpy race, ros2/rclpy#398): a clean stop. Any other error while running is real.
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

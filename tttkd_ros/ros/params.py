"""The node's parameters: declaration (with descriptions and ranges), reading them into the
core configs, and validating run-time changes of `adaptation.*`.

Defaults come from the core dataclasses, so the node, the offline tools and the YAML file
start from the same numbers. Everything but `adaptation.*` (and `use_sim_time`) is read-only
after start: it shapes the subscriptions, the model or the teacher. rclpy is imported only by
what talks to it (declaring, QoS profiles), so `tttkd eval --params` reads a parameter file
the node's way where no rclpy is installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.config import (
    ADAPT_PARAMS,
    GUARD_RESTORES,
    MODES,
    OPTIMIZERS,
    ORDERS,
    PROTOCOLS,
    SCHEDULES,
    TARGET_NORM_LEVELS,
    TEACHER_DIMS,
    AdaptConfig,
    TeacherConfig,
    with_mode_preset,
)
from .extrinsics import extrinsic_matrix

if TYPE_CHECKING:
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile

NODE_NAME = "tttkd_adapt"  # the node's default name: its parameter section, its topics' namespace
RELIABILITY = ("reliable", "best_effort")
# how a camera's images arrive: sensor_msgs/Image on CAM/image, or sensor_msgs/CompressedImage
# (JPEG / PNG) on CAM/image/compressed, image_transport's name for it
TRANSPORTS = ("raw", "compressed")
# whether a camera's image is rectified (project with R and P) or raw (K and D); auto: its
# topic is named like image_proc's rectified outputs (image_rect, image_rect_color)
RECTIFIED = ("auto", "true", "false")
_ADAPT, _TEACHER = AdaptConfig(), TeacherConfig()


def _choice(options) -> str:
    return " (one of: " + ", ".join(options) + ")"


# adaptation.* settings with a fixed set of values, checked here so a rejection lists them
CHOICES = {"mode": MODES, "protocol": PROTOCOLS, "order": ORDERS, "schedule": SCHEDULES,
           "optimizer": OPTIMIZERS, "params": ADAPT_PARAMS, "guard_restore": GUARD_RESTORES}


def validate_adaptation(cfg: AdaptConfig) -> None:
    """AdaptConfig.validate, with the allowed values named for the choice settings."""
    for key, options in CHOICES.items():
        if getattr(cfg, key) not in options:
            raise ValueError(f"invalid adaptation.{key}: {getattr(cfg, key)!r}{_choice(options)}")
    cfg.validate()


@dataclass(frozen=True)
class Spec:
    """One parameter: default value, description, optional numeric range, read-only flag."""

    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    read_only: bool = True

    def descriptor(self) -> ParameterDescriptor:
        from rcl_interfaces.msg import (
            FloatingPointRange,
            IntegerRange,
            ParameterDescriptor,
        )

        d = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.lo is not None:
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                d.integer_range = [IntegerRange(from_value=int(self.lo), to_value=int(self.hi))]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.lo),
                                                             to_value=float(self.hi))]
        return d


# Adaptation settings: every AdaptConfig field, changeable at run time except the seed.
ADAPTATION: dict[str, Spec] = {
    "enabled": Spec(True, "Adapt the model on each frame; false = inference only.",
                    read_only=False),
    "mode": Spec(_ADAPT.mode, "Self-supervised objective" + _choice(MODES), read_only=False),
    "use_mode_presets": Spec(True, "Run tent and ocl with the settings measured for them "
                             "(they replace lr, params, bn_prior, w_ocl, w_source, "
                             "anchor_weight, target_norm_levels; see the README); false = "
                             "these parameters as given, for every mode.",
                             read_only=False),
    "protocol": Spec(_ADAPT.protocol, "continual keeps updates across frames; episodic "
                     "restores the source weights after every frame" + _choice(PROTOCOLS),
                     read_only=False),
    "order": Spec(_ADAPT.order, "Predict after the steps (TTT-KD) or from the first step's "
                  "forward pass (OCL)" + _choice(ORDERS), read_only=False),
    "schedule": Spec(_ADAPT.schedule, "sync: adapt on the frame, then predict it; async: predict "
                     "with the current weights at once and adapt on the frame in the "
                     "background, the new weights serving from a later frame (a frame that "
                     "arrives while adaptation runs is not adapted on)" + _choice(SCHEDULES),
                     read_only=False),
    "max_steps": Spec(_ADAPT.max_steps, "Most gradient steps per frame.", 0, 1000,
                      read_only=False),
    "budget_ms": Spec(_ADAPT.budget_ms, "Per-frame adaptation time budget in ms; a step that "
                      "would not fit is not started. 0 = inference only.", 0.0, 60000.0,
                      read_only=False),
    "optimizer": Spec(_ADAPT.optimizer, "Test-time optimizer" + _choice(OPTIMIZERS),
                      read_only=False),
    "lr": Spec(_ADAPT.lr, "Test-time learning rate.", 0.0, 1.0, read_only=False),
    "momentum": Spec(_ADAPT.momentum, "SGD momentum.", 0.0, 1.0, read_only=False),
    "weight_decay": Spec(_ADAPT.weight_decay, "Weight decay.", 0.0, 1.0, read_only=False),
    "params": Spec(_ADAPT.params, "Which parameters adapt" + _choice(ADAPT_PARAMS),
                   read_only=False),
    "w_kd": Spec(_ADAPT.w_kd, "Weight of the DINOv2 distillation loss.", 0.0, 100.0,
                 read_only=False),
    "w_ocl": Spec(_ADAPT.w_ocl, "Weight of the output contrastive loss.", 0.0, 100.0,
                  read_only=False),
    "ocl_pos_coeff": Spec(_ADAPT.ocl_pos_coeff, "OCL positive-term coefficient.", 0.0, 100.0,
                          read_only=False),
    "ocl_neg_coeff": Spec(_ADAPT.ocl_neg_coeff, "OCL negative-term coefficient.", 0.0, 100.0,
                          read_only=False),
    "bn_prior": Spec(_ADAPT.bn_prior, "BN statistics while adapting: prior * source + "
                     "(1 - prior) * batch (OCL uses 0.85; 1 = source only).", 0.0, 1.0,
                     read_only=False),
    "restore_prob": Spec(_ADAPT.restore_prob, "Stochastic restoration probability per weight "
                         "element and step (OCL uses 0.01).", 0.0, 1.0, read_only=False),
    "target_norm_levels": Spec(_ADAPT.target_norm_levels, "Test-time normalisation: the batch "
                               "norms of the encoder's first N levels (1 = the stem, 2 = and "
                               "encoder stage 1, ... 5 = the whole encoder) normalise with a "
                               "moving average of the frames' own statistics; 0 = source "
                               "statistics.", 0, TARGET_NORM_LEVELS, read_only=False),
    "target_norm_momentum": Spec(_ADAPT.target_norm_momentum, "Weight of each frame in the "
                                 "test-time normalisation's moving average (a plain mean over "
                                 "the first 1/momentum frames).", 0.001, 1.0, read_only=False),
    "target_norm_check": Spec(_ADAPT.target_norm_check, "Teacher's check of test-time "
                              "normalisation: the levels after the stem use their averages only "
                              "while, on the trusted cameras, the source model's KD loss is "
                              "lower with them than with the source statistics (one more source "
                              "forward a frame).", read_only=False),
    "target_norm_balance": Spec(_ADAPT.target_norm_balance, "Test-time normalisation weighs "
                                "each frame's voxels towards the training class mix (the "
                                "checkpoint's class shares; plain without them), so a scene "
                                "with other classes moves the statistics less than a changed "
                                "sensor does.", read_only=False),
    "seed": Spec(_ADAPT.seed, "Seed of the stochastic restoration.", 0, 2**31 - 1),
    "spike_factor": Spec(_ADAPT.spike_factor, "A step whose loss exceeds its recent median by "
                         "more than spike_factor robust deviations (and spike_min_delta) is "
                         "discarded and the last good weights restored; 0 = off.", 0.0, 1000.0,
                         read_only=False),
    "spike_min_delta": Spec(_ADAPT.spike_min_delta, "Smallest loss rise over the recent median "
                            "that counts as a spike (noise floor).", 0.0, 1000.0,
                            read_only=False),
    "spike_window": Spec(_ADAPT.spike_window, "Frames of loss history the spike test uses.",
                         1, 10000, read_only=False),
    "spike_patience": Spec(_ADAPT.spike_patience, "Spikes in a row after which the new loss "
                           "level is accepted as normal.", 1, 1000, read_only=False),
    "collapse_jump": Spec(_ADAPT.collapse_jump, "Rise of the dominant class's share of a frame "
                          "over its recent median that signals a collapse (reset to the "
                          "source weights); 0 = off.", 0.0, 1.0, read_only=False),
    "collapse_window": Spec(_ADAPT.collapse_window, "Frames of history the collapse test "
                            "uses.", 1, 10000, read_only=False),
    "collapse_frames": Spec(_ADAPT.collapse_frames, "Frames in a row with the jump that make a "
                            "collapse.", 1, 1000, read_only=False),
    "reset_on_clock_jump": Spec(_ADAPT.reset_on_clock_jump, "Reset to the source weights when "
                                "time jumps backwards (a looped bag).", read_only=False),
    "guard_every": Spec(_ADAPT.guard_every, "Harm guard: compare the adapted model with the "
                        "source model every N adapted frames (its time comes out of "
                        "budget_ms); 0 = off.", 0, 100000, read_only=False),
    "guard_patience": Spec(_ADAPT.guard_patience, "Failed guard checks in a row that roll the "
                           "weights back.", 1, 1000, read_only=False),
    "guard_flip": Spec(_ADAPT.guard_flip, "A guard check fails when adaptation changed more "
                       "than this share of the labels the source model is sure of "
                       "(source_confidence).", 0.0, 1.0, read_only=False),
    "source_confidence": Spec(_ADAPT.source_confidence, "Softmax probability from which a "
                              "source label counts as sure (the guard check and w_source "
                              "use them).", 0.0, 0.999, read_only=False),
    "w_source": Spec(_ADAPT.w_source, "Weight of the source consistency loss: cross-entropy "
                     "towards the source model's sure labels (the source model then predicts "
                     "every adapted frame, from budget_ms); 0 = off.", 0.0, 100.0,
                     read_only=False),
    "w_probe": Spec(_ADAPT.w_probe, "Weight of label-level distillation: cross-entropy "
                    "towards the classes the checkpoint's teacher probe gives the points a "
                    "camera sees (tttkd train fits it; tttkd probe adds it to an older "
                    "checkpoint; none = no effect); 0 = off.", 0.0, 100.0, read_only=False),
    "probe_confidence": Spec(_ADAPT.probe_confidence, "Softmax probability from which the "
                             "teacher probe's class of a point is distilled.", 0.0, 0.999,
                             read_only=False),
    "probe_balance": Spec(_ADAPT.probe_balance, "Class balance of that cross-entropy: each "
                          "class weighs its share of the frame's probe labels to the power "
                          "-probe_balance; 0 = unweighted, 1 = every class alike.", 0.0, 4.0,
                          read_only=False),
    "guard_restore": Spec(_ADAPT.guard_restore, "What a rollback restores: the weights of the "
                          "last passed check (the source when the checks fail again after a "
                          "rollback with no pass between) or the source weights"
                          + _choice(GUARD_RESTORES),
                          read_only=False),
    "guard_kd_ratio": Spec(_ADAPT.guard_kd_ratio, "A camera whose KD loss under the source "
                           "model is over this many times, or under its inverse, the loss the "
                           "checkpoint reached in training gives no distillation targets on "
                           "that frame; 0 = trust every camera (also when the checkpoint "
                           "records no KD loss).", 0.0, 1000.0, read_only=False),
    "guard_min_brightness": Spec(_ADAPT.guard_min_brightness, "A camera whose image's mean "
                                 "brightness (0..1 of full scale) is under this gives no "
                                 "distillation targets on that frame (an under-exposed, night "
                                 "or covered camera); 0 = off.", 0.0, 0.999, read_only=False),
    "ema_momentum": Spec(_ADAPT.ema_momentum, "Serve a moving average of the adapted weights "
                         "with this momentum per step; 0 = the adapted weights.", 0.0, 0.9999,
                         read_only=False),
    "anchor_weight": Spec(_ADAPT.anchor_weight, "L2 pull of the adapted weights towards the "
                          "source: weight * ||theta - theta_source||^2 in the loss; 0 = off.",
                          0.0, 1000.0, read_only=False),
    "reset_every": Spec(_ADAPT.reset_every, "Back to the source weights every N adapted frames "
                        "(RDumb); 0 = never.", 0, 10_000_000, read_only=False),
}

TEACHER: dict[str, Spec] = {
    "name": Spec(_TEACHER.name, "DINOv2 teacher; must match the checkpoint" +
                 _choice(TEACHER_DIMS)),
    "weights": Spec(_TEACHER.weights, "Local teacher weights file; empty = random weights "
                    "(KD targets are then meaningless, diagnostics warn), 'hub' = download."),
    "image_height": Spec(_TEACHER.image_height, "Teacher input height in pixels (rounded to "
                         "a multiple of 14; width keeps the aspect); 0 = the height the "
                         "checkpoint was trained with.", 0, 2240),
    "seed": Spec(_TEACHER.seed, "Init seed of the random-weights fallback.", 0, 2**31 - 1),
    "allow_mismatch": Spec(_TEACHER.allow_mismatch, "Start even when the checkpoint was "
                           "trained with other teacher weights or another image height (it "
                           "then distils towards features its head was not trained on)."),
}

GENERAL: dict[str, Spec] = {
    "checkpoint": Spec("", "Path of the source model checkpoint (tttkd train). Required."),
    "device": Spec("auto", "Compute device: auto, cpu, cuda or cuda:N."),
    "cameras": Spec(["camera"], "Camera namespaces; each subscribes CAM/image and "
                    "CAM/camera_info and has CAM.xyz / CAM.quat."),
    "use_tf": Spec(False, "Look camera extrinsics up in tf2 (where tf2_ros is installed) "
                   "instead of CAM.xyz / CAM.quat."),
    "tf_timeout": Spec(0.05, "Seconds to wait for a tf2 transform at the cloud's stamp.",
                       0.0, 10.0),
    "tf_static": Spec(True, "Cache the first tf2 transform per camera (rigid mount)."),
    "sync.slop": Spec(0.05, "Largest |cloud stamp - image stamp| in seconds that pairs.",
                      0.0, 10.0),
    "sync.queue_size": Spec(10, "Messages kept per input while waiting to pair.", 1, 1000),
    "sync.timeout": Spec(0.2, "Seconds after a cloud's arrival (steady clock) after which "
                         "it is processed without the images that have not come.", 0.0, 60.0),
    "qos.input.reliability": Spec("best_effort", "Input QoS reliability" +
                                  _choice(RELIABILITY)),
    "qos.input.depth": Spec(5, "Input QoS history depth.", 1, 1000),
    "qos.output.reliability": Spec("reliable", "Output QoS reliability" +
                                   _choice(RELIABILITY)),
    "qos.output.depth": Spec(10, "Output QoS history depth.", 1, 1000),
    "palette": Spec("", "Class colours '#rrggbb, ...' in class order; empty = the "
                    "checkpoint's palette."),
    "max_points": Spec(_ADAPT.max_points, "Most points the model sees per frame; a larger "
                       "cloud is grid-subsampled and every point takes its cell's label. "
                       "0 = no cap.", 0, 100_000_000),
    "min_range": Spec(_ADAPT.min_range, "Points at the origin or closer than this (m) are "
                      "no-returns (organised clouds mark missing returns so): left out of the "
                      "model and labeled 65535, counted in ~/stats.", 0.0, 1000.0),
    "intensity_scale": Spec(_ADAPT.intensity_scale, "Factor applied to the input intensity "
                            "before the model; 0 = auto: the checkpoint's intensity range over "
                            "the input's (an integer field's full range, else 1, 255 or 65535, "
                            "whichever holds the cloud's largest value).", 0.0, 1e6),
    "sensor_frame": Spec("", "The LiDAR frame the model was trained in, when clouds arrive in "
                         "another (e.g. Autoware's base_link): with use_tf the cloud is moved "
                         "into it by tf2 at its stamp. Empty = by cloud_to_sensor.xyz/quat."),
    "cloud_to_sensor.xyz": Spec([0.0, 0.0, 0.0], "Translation (m) of the transform from the "
                                "cloud's frame to the LiDAR sensor frame the model expects "
                                "(identity: the cloud is in the sensor frame)."),
    "cloud_to_sensor.quat": Spec([0.0, 0.0, 0.0, 1.0], "Rotation (x, y, z, w) of that "
                                 "transform."),
    "lidar_frame": Spec("", "The cloud frame_id the camera extrinsics are for; a cloud in "
                        "another frame is processed without cameras. Empty = any."),
}


# LiDAR (x forward, z up) -> optical (z forward, y down): a camera at the LiDAR's origin
# looking along its +x axis.
FORWARD_CAMERA_QUAT = [0.5, -0.5, 0.5, 0.5]


def camera_specs(camera: str) -> dict[str, Spec]:
    return {
        f"{camera}.xyz": Spec([0.0, 0.0, 0.0], f"Translation (m) of the transform from the "
                              f"cloud's frame to the '{camera}' optical frame."),
        f"{camera}.quat": Spec(list(FORWARD_CAMERA_QUAT), f"Rotation (x, y, z, w) of the "
                               f"cloud's frame -> '{camera}' optical frame transform."),
        f"{camera}.frame_id": Spec("", f"The image frame_id the '{camera}' extrinsic is for; "
                                   "an image in another frame is not used. Empty = any."),
        f"{camera}.transport": Spec("raw", f"How '{camera}' images arrive: raw "
                                    f"(sensor_msgs/Image on {camera}/image) or compressed "
                                    f"(JPEG/PNG sensor_msgs/CompressedImage on "
                                    f"{camera}/image/compressed)" + _choice(TRANSPORTS)),
        f"{camera}.rectified": Spec("auto", f"Whether '{camera}' images are rectified "
                                    "(projected with CameraInfo R and P, no distortion) or raw "
                                    "(K and D); auto: rectified when the image topic is named "
                                    "image_rect..." + _choice(RECTIFIED)),
    }


def all_specs(cameras: list[str]) -> dict[str, Spec]:
    """Every parameter name the node declares for these cameras -> its Spec; ValueError
    unless the cameras are distinct non-empty names."""
    if not cameras or len(set(cameras)) != len(cameras) or not all(cameras):
        raise ValueError(f"cameras must be distinct non-empty names, got {cameras}")
    specs = dict(GENERAL)
    specs.update({f"adaptation.{k}": s for k, s in ADAPTATION.items()})
    specs.update({f"teacher.{k}": s for k, s in TEACHER.items()})
    for cam in cameras:
        specs.update(camera_specs(cam))
    return specs


@dataclass
class QosSettings:
    reliability: str
    depth: int

    def profile(self) -> QoSProfile:
        from rclpy.qos import (
            DurabilityPolicy,
            HistoryPolicy,
            QoSProfile,
            ReliabilityPolicy,
        )

        reliability = {"reliable": ReliabilityPolicy.RELIABLE,
                       "best_effort": ReliabilityPolicy.BEST_EFFORT}[self.reliability]
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth,
                          reliability=reliability, durability=DurabilityPolicy.VOLATILE)


@dataclass
class NodeSettings:
    """Everything read from the parameters at start."""

    checkpoint: str
    device: str
    cameras: list[str]
    extrinsics: dict[str, np.ndarray]  # camera -> 4 x 4 T_cam_cloud (the cloud's frame)
    sensor_frame: str  # "" = cloud_to_sensor moves the cloud into the model's sensor frame
    cloud_to_sensor: np.ndarray  # 4 x 4 T_sensor_cloud
    use_tf: bool
    tf_timeout: float
    tf_static: bool
    slop: float
    queue_size: int
    sync_timeout: float
    adapt: AdaptConfig  # as the parameters say; the engine runs effective_adaptation(...)
    mode_presets: bool
    enabled: bool
    teacher: TeacherConfig
    qos_in: QosSettings
    qos_out: QosSettings
    palette: str
    lidar_frame: str  # "" = any
    camera_frames: dict[str, str]  # camera -> expected image frame_id, "" = any
    camera_transports: dict[str, str]  # camera -> "raw" | "compressed"
    camera_rectified: dict[str, str]  # camera -> "auto" | "true" | "false"


def declare_and_read(node: Node) -> NodeSettings:
    """Declare every parameter on `node` and read them; raises ValueError on a bad value."""
    node.declare_parameter("cameras", GENERAL["cameras"].default,
                           GENERAL["cameras"].descriptor())
    cameras = list(node.get_parameter("cameras").value)
    specs = all_specs(cameras)
    for name, spec in specs.items():
        if name != "cameras":
            node.declare_parameter(name, spec.default, spec.descriptor())
    v = {name: node.get_parameter(name).value for name in specs}
    return settings_from_values(v, cameras)


def settings_from_values(v: dict[str, Any], cameras: list[str]) -> NodeSettings:
    """Build NodeSettings from a name -> value mapping (validated)."""
    adapt_fields = {f.name for f in fields(AdaptConfig)}
    adapt = AdaptConfig(**{k: v[f"adaptation.{k}"] for k in ADAPTATION if k in adapt_fields},
                        max_points=v["max_points"], min_range=v["min_range"],
                        intensity_scale=v["intensity_scale"])
    validate_adaptation(adapt)
    teacher = TeacherConfig(**{k: v[f"teacher.{k}"] for k in TEACHER})
    if teacher.name not in TEACHER_DIMS:
        raise ValueError(f"invalid teacher.name: {teacher.name!r}{_choice(TEACHER_DIMS)}")
    for key in ("qos.input.reliability", "qos.output.reliability"):
        if v[key] not in RELIABILITY:
            raise ValueError(f"invalid {key}: {v[key]!r}{_choice(RELIABILITY)}")
    extrinsics = {}
    for cam in cameras:
        for key, options in (("transport", TRANSPORTS), ("rectified", RECTIFIED)):
            if v[f"{cam}.{key}"] not in options:
                raise ValueError(f"invalid {cam}.{key}: {v[f'{cam}.{key}']!r}{_choice(options)}")
        try:
            extrinsics[cam] = extrinsic_matrix(v[f"{cam}.xyz"], v[f"{cam}.quat"])
        except ValueError as exc:
            raise ValueError(f"camera '{cam}' extrinsic: {exc}") from exc
    try:
        cloud_to_sensor = extrinsic_matrix(v["cloud_to_sensor.xyz"], v["cloud_to_sensor.quat"])
    except ValueError as exc:
        raise ValueError(f"cloud_to_sensor: {exc}") from exc
    return NodeSettings(
        checkpoint=v["checkpoint"], device=v["device"], cameras=cameras, extrinsics=extrinsics,
        sensor_frame=v["sensor_frame"], cloud_to_sensor=cloud_to_sensor,
        use_tf=v["use_tf"], tf_timeout=v["tf_timeout"], tf_static=v["tf_static"],
        slop=v["sync.slop"], queue_size=v["sync.queue_size"], sync_timeout=v["sync.timeout"],
        adapt=adapt, mode_presets=v["adaptation.use_mode_presets"],
        enabled=v["adaptation.enabled"], teacher=teacher,
        qos_in=QosSettings(v["qos.input.reliability"], v["qos.input.depth"]),
        qos_out=QosSettings(v["qos.output.reliability"], v["qos.output.depth"]),
        palette=v["palette"], lidar_frame=v["lidar_frame"],
        camera_frames={cam: v[f"{cam}.frame_id"] for cam in cameras},
        camera_transports={cam: v[f"{cam}.transport"] for cam in cameras},
        camera_rectified={cam: v[f"{cam}.rectified"] for cam in cameras},
    )


def effective_adaptation(configured: AdaptConfig, mode_presets: bool) -> AdaptConfig:
    """What the engine runs: the parameters' settings, with the mode's preset when on."""
    return with_mode_preset(configured) if mode_presets else configured


@dataclass
class AdaptationUpdate:
    """A validated run-time change: AdaptConfig field changes, the enabled flag and/or the
    presets switch."""

    changes: dict[str, Any] = field(default_factory=dict)
    enabled: bool | None = None
    mode_presets: bool | None = None

    def __bool__(self) -> bool:
        return bool(self.changes) or self.enabled is not None or self.mode_presets is not None


def adaptation_update(params: list[Parameter], current: AdaptConfig) -> AdaptationUpdate:
    """Collect the `adaptation.*` parameters of a set request and validate them together
    against the current config. Raises ValueError with the reason when they are invalid;
    other parameters are ignored (rclpy already enforced read-only, type and range)."""
    update = AdaptationUpdate()
    for p in params:
        if not p.name.startswith("adaptation."):
            continue
        key = p.name.split(".", 1)[1]
        if key == "enabled":
            update.enabled = bool(p.value)
        elif key == "use_mode_presets":
            update.mode_presets = bool(p.value)
        else:
            update.changes[key] = p.value
    if update.changes:
        validate_adaptation(replace(current, **update.changes))
    return update


def parse_palette(text: str, num_classes: int) -> np.ndarray | None:
    """'#rrggbb, #rrggbb, ...' -> (num_classes, 3) uint8; empty text -> None."""
    items = [s.strip().lstrip("#") for s in text.split(",") if s.strip()]
    if not items:
        return None
    if len(items) != num_classes:
        raise ValueError(f"palette has {len(items)} colours, the checkpoint has {num_classes}"
                         " classes")
    rows = []
    for s in items:
        try:
            if len(s) != 6:
                raise ValueError
            rows.append([int(s[i:i + 2], 16) for i in (0, 2, 4)])
        except ValueError:
            raise ValueError(f"palette colour '#{s}' is not of the form #rrggbb") from None
    return np.array(rows, dtype=np.uint8)

"""Explicit configs for the model, the teacher and the adaptation engine.

Every choice METHOD.md leaves open is a field here with a default; the README explains the
defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .labels import CLASS_NAMES

MODES = ("none", "kd", "ocl", "kd+ocl", "tent")
PROTOCOLS = ("continual", "episodic")
ORDERS = ("adapt_then_predict", "predict_then_adapt")
SCHEDULES = ("sync", "async")
OPTIMIZERS = ("sgd", "adam", "adamw")
ADAPT_PARAMS = ("backbone", "backbone_bn", "all")
GUARD_RESTORES = ("last_good", "source")  # what the harm guard rolls back to
TARGET_NORM_LEVELS = 5  # the encoder's levels: the stem and its four stages

# Sparse U-Net channel widths: stem, 4 encoder stages, 4 decoder stages.
BACKBONE_WIDTHS: dict[str, tuple[int, ...]] = {
    "tiny": (16, 16, 32, 64, 64, 64, 48, 32, 32),
    "base": (32, 32, 64, 128, 256, 256, 128, 96, 96),  # SpUNet-style widths
}
TEACHER_DIMS: dict[str, int] = {
    "vit_small_patch14_dinov2": 384,
    "vit_base_patch14_dinov2": 768,
    "vit_large_patch14_dinov2": 1024,
}


@dataclass
class ModelConfig:
    backbone: str = "tiny"  # key of BACKBONE_WIDTHS
    in_channels: int = 4  # per-point input features: x, y, z, intensity
    num_classes: int = len(CLASS_NAMES)
    feat_dim: int = 384  # rho_2D output size = teacher feature size
    head: str = "linear"  # "linear" or "mlp" (2-layer)
    voxel_size: float = 0.1  # metres
    blocks_per_stage: int = 1
    # False: the model ignores intensity (its input feature is zeroed), for sensors whose
    # intensity means something else than the training data's (tttkd train --no-intensity)
    use_intensity: bool = True
    # rho_2D predicts the teacher's features centred on each cloud's mean (the part that tells
    # points apart; losses.kd_distances), and adaptation distils them the same way. False:
    # the raw features (checkpoints from before the option). `tttkd train --kd-features`.
    kd_center: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_TEACHER_HEIGHT = 224  # DINOv2's training resolution


@dataclass
class TeacherConfig:
    name: str = "vit_small_patch14_dinov2"
    weights: str = ""  # a local weight file; "hub" = timm's download; "" = seeded random init
    # resized height (rounded to a multiple of 14), aspect kept; 0 = the height the checkpoint
    # was trained with (core/loading.py resolves it; DEFAULT_TEACHER_HEIGHT if unrecorded)
    image_height: int = 0
    seed: int = 0  # init seed for the random-weights fallback
    # start even when the checkpoint was trained with other teacher weights or image height
    # (its rho_2D head then distils towards features it was not trained on)
    allow_mismatch: bool = False

    @property
    def feat_dim(self) -> int:
        return TEACHER_DIMS[self.name]


@dataclass
class AdaptConfig:
    mode: str = "kd+ocl"
    protocol: str = "continual"
    order: str = "adapt_then_predict"
    # sync: adapt on the frame, then predict it (TTT-KD). async: predict with the current
    # weights and return, adapt on the frame in the background (core/adapt/schedule.py); the new
    # weights serve from a later frame on, and `order` does not apply.
    schedule: str = "sync"
    max_steps: int = 1
    budget_ms: float = 100.0  # per-frame adaptation budget; 0 = inference only
    optimizer: str = "sgd"
    # validation drives (README): 1e-2 gained more on a sensor shift but drifted 1.5-2.4
    # points below no adaptation within 60 frames where nothing on the LiDAR side changed
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    params: str = "backbone"  # which parameters adapt, see ADAPT_PARAMS
    w_kd: float = 1.0
    w_ocl: float = 0.1  # OCL at full weight drifted on a dropout drive (README)
    ocl_pos_coeff: float = 3.0
    ocl_neg_coeff: float = 1.0
    # BN statistics while adapting: prior * source + (1 - prior) * batch (OCL: 0.85);
    # 1.0 = source statistics only, 0.0 = batch statistics only (TENT)
    bn_prior: float = 1.0
    restore_prob: float = 0.01  # stochastic restoration per element and step (OCL: 0.01)
    # Test-time normalisation (core/adapt/target_norm.py): the batch norms of the encoder's
    # first target_norm_levels levels (1: the stem; 2: and encoder stage 1; ... 5: the whole
    # encoder; 0 = off) normalise with a moving average of the frames' own statistics, each
    # frame weighing target_norm_momentum (a plain mean over the first 1/momentum frames).
    # Validation drives (30 frames, no gradient): 3 gained 1.0-4.6 points on the sensor
    # shifts and kept another town within 0.2; 2 and 5 lost 1.1 there. Over 150 frames with
    # distillation, momentum 0.01 beat 0.1 and 0.03 on every shift (mean +8.9 % against
    # +8.1 %, another town -0.0 against -0.4 points): a slow average follows the sensor, not
    # the class mix of the last few frames (README, "How the shipped defaults were chosen").
    target_norm_levels: int = 3
    target_norm_momentum: float = 0.01
    # The teacher's check: the levels after the stem use their averages only while, on the
    # trusted cameras, they bring the source model's features nearer the teacher's than the
    # source statistics do (one more source forward a frame, in the guard's budget). Off:
    # it fixed the unseen towns of the validation drives, but on the reported beams32 drive
    # it held the levels that gain there (README, "The teacher's check on the normalisation").
    target_norm_check: bool = False
    # Each frame's statistics weighted towards the training class mix (the checkpoint's class
    # shares; without them, plain): a sensor change moves them, a scene's class mix much less
    # (core/adapt/class_mix.py). Validation drives (150 frames, with distillation): another
    # town +1.2 points, range noise +0.3, a tie on the other five (README, "Class-mix
    # weighting of the normalisation").
    target_norm_balance: bool = True
    seed: int = 0
    # Safety (core/adapt/safety.py). A cloud with more points than max_points is grid-subsampled
    # for the model and every point takes its cell's label; 0 = no cap.
    max_points: int = 300_000
    # A point at the origin or closer than min_range metres is a no-return (organised
    # clouds mark missing returns so: Ouster, RELLIS-3D); like a non-finite point it is left
    # out of the model and labeled UNLABELED. 0.3 m is below any spinning LiDAR's minimum.
    min_range: float = 0.3
    # Input intensity times this factor is what the model sees; 0 = auto: the checkpoint's
    # intensity range over the input's (core/intensity.py).
    intensity_scale: float = 0.0
    # A step whose loss part exceeds its recent median by more than
    # max(spike_factor * robust spread, spike_min_delta) is discarded and the last good
    # weights restored; spike_factor 0 = off. spike_window: accepted steps remembered;
    # spike_patience: spikes in a row after which the new level counts as normal.
    spike_factor: float = 6.0
    spike_min_delta: float = 0.25
    spike_window: int = 32
    spike_patience: int = 5
    # A collapse (the dominant class's share of a frame at least collapse_jump above its
    # median over the last collapse_window frames, for collapse_frames frames in a row)
    # resets to the source weights; collapse_jump 0 = off.
    collapse_jump: float = 0.3
    collapse_window: int = 20
    collapse_frames: int = 3
    reset_on_clock_jump: bool = True  # time went backwards (looped bag): back to the source
    # The source model's sure labels (core/adapt/guard.py): points it labels with a softmax
    # probability of at least source_confidence. On the calibrated world they are 96-99 %
    # correct, so adaptation that changes them is almost surely making errors.
    source_confidence: float = 0.9
    # Source consistency: w_source * cross-entropy of the adapted model towards the source's
    # sure labels joins the loss (the source model predicts every adapted frame for it, from
    # the frame's budget); 0 = off. Adaptation then moves the labels the source is unsure of.
    # Off: with the pretrained teacher it removed the gains on sensor shifts (the source is
    # sure of some wrong labels there); with random teacher weights it halved the harm.
    w_source: float = 0.0
    # Label-level distillation (core/model/teacher_probe.py): w_probe * cross-entropy of the
    # adapted model towards the classes the checkpoint's teacher probe gives the visible
    # points with a probability of at least probe_confidence, each class weighing its share
    # of the frame's probe labels to the power -probe_balance (0 = off; a checkpoint without
    # a probe has none). Off: on the validation drives (150 frames) w_probe 0.1 gained 0.8-1.2
    # points on beams32 and range noise but lost 1.3 on fog, whose camera the fog dims too,
    # and ended another town 0.6 below no adaptation; unbalanced (0), it lost beams32 1.0.
    w_probe: float = 0.0
    probe_confidence: float = 0.8
    probe_balance: float = 1.0
    # Harm guard. Every guard_every adapted frames (0 = off) the source model predicts the
    # frame too; a check fails when adaptation changed more than guard_flip of the source's
    # sure labels; guard_patience failures in a row roll back to guard_restore (last_good:
    # the weights of the last passed check, or the source when the checks fail again after a
    # rollback with no pass between; source: straight to the source).
    guard_every: int = 10
    guard_patience: int = 3
    # a safety net against gross damage: on the validation drives a helpful adaptation changed
    # more than 5 % of the sure labels (beams32) and a harmful one less
    guard_flip: float = 0.25
    guard_restore: str = "last_good"
    # A camera whose KD loss under the source model is over guard_kd_ratio times, or under
    # 1 / guard_kd_ratio times, the one the checkpoint reached in training teaches nothing on
    # that frame (too far: noise, glare; too close: the near-constant features of a black
    # image); 0 = trust every camera.
    guard_kd_ratio: float = 2.0
    # A camera whose image's mean brightness (0..1 of full scale) is under this teaches
    # nothing on that frame; its teacher features are not even computed. The KD ratio above
    # cannot tell an under-exposed camera from another scene (both 0.80-0.90, clean
    # 0.89-1.04 on the validation drives); brightness can (the synthetic dark camera
    # 0.08-0.10, rain 0.26-0.29, clean 0.35-0.40). 0 = off.
    guard_min_brightness: float = 0.15
    # Serve an exponential moving average of the adapted weights (CoTTA / EATA style);
    # 0 = serve the raw weights.
    ema_momentum: float = 0.0
    # L2-SP: anchor_weight * ||theta - theta_source||^2 joins the loss; 0 = off. It bounds the
    # long-run drift towards a weak teacher's errors, and costs a good teacher's gain: validation
    # seed 30, last-window gain with the hour-long teacher on range noise / fog 0: +6.7 / +5.6,
    # 0.3: +4.8 / +4.2, 1: +2.0 / +2.4; with the demo's weak teacher (300 frames of range
    # noise) 0: -4.6, 0.3: +0.5, 1: +0.9. 0.3 keeps most of the gain and still holds the drift.
    anchor_weight: float = 0.3
    reset_every: int = 0  # RDumb: back to the source every N adapted frames; 0 = never

    @property
    def step_bn_prior(self) -> float | None:
        """The BN prior a step's forward (and the source reference's) mixes in batch
        statistics with; None at 1.0, where the layers keep their statistics."""
        return self.bn_prior if self.bn_prior < 1.0 else None

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        checks = {
            "mode": self.mode in MODES, "protocol": self.protocol in PROTOCOLS,
            "order": self.order in ORDERS, "schedule": self.schedule in SCHEDULES,
            "optimizer": self.optimizer in OPTIMIZERS, "params": self.params in ADAPT_PARAMS,
            "max_steps": self.max_steps >= 0, "budget_ms": self.budget_ms >= 0,
            "lr": self.lr >= 0, "bn_prior": 0.0 <= self.bn_prior <= 1.0,
            "restore_prob": 0.0 <= self.restore_prob <= 1.0,
            "target_norm_levels": 0 <= self.target_norm_levels <= TARGET_NORM_LEVELS,
            "target_norm_momentum": 0.0 < self.target_norm_momentum <= 1.0,
            "max_points": self.max_points >= 0, "min_range": self.min_range >= 0,
            "intensity_scale": self.intensity_scale >= 0,
            "spike_factor": self.spike_factor >= 0,
            "spike_min_delta": self.spike_min_delta >= 0, "spike_window": self.spike_window >= 1,
            "spike_patience": self.spike_patience >= 1,
            "collapse_jump": 0.0 <= self.collapse_jump <= 1.0,
            "collapse_window": self.collapse_window >= 1,
            "collapse_frames": self.collapse_frames >= 1,
            "guard_every": self.guard_every >= 0, "guard_patience": self.guard_patience >= 1,
            "guard_flip": 0.0 <= self.guard_flip <= 1.0,
            "source_confidence": 0.0 <= self.source_confidence < 1.0,
            "w_source": self.w_source >= 0, "w_probe": self.w_probe >= 0,
            "probe_confidence": 0.0 <= self.probe_confidence < 1.0,
            "probe_balance": self.probe_balance >= 0,
            "guard_restore": self.guard_restore in GUARD_RESTORES,
            "guard_kd_ratio": self.guard_kd_ratio == 0 or self.guard_kd_ratio >= 1,
            "guard_min_brightness": 0.0 <= self.guard_min_brightness < 1.0,
            "ema_momentum": 0.0 <= self.ema_momentum < 1.0,
            "anchor_weight": self.anchor_weight >= 0, "reset_every": self.reset_every >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid adaptation.{name}: {getattr(self, name)!r}")


# Each baseline with its own best setting on the validation drives (README, "Does adaptation
# help?"): what `mode: tent` and `mode: ocl` run with on the robot, in eval and in the bench
# unless told otherwise. TENT: entropy minimisation on the batch-norm affine parameters,
# normalising with the current cloud's statistics (Wang et al., ICLR 2021). OCL alone: its
# loss at full weight with a smaller step (kd+ocl's 0.1 is OCL as a regulariser of KD).
# Both run without the source consistency term, the anchor and test-time normalisation, as
# published.
MODE_PRESETS: dict[str, dict[str, object]] = {
    "tent": {"params": "backbone_bn", "bn_prior": 0.0, "lr": 3e-4, "w_source": 0.0,
             "anchor_weight": 0.0, "target_norm_levels": 0},
    "ocl": {"w_ocl": 1.0, "lr": 3e-4, "w_source": 0.0, "anchor_weight": 0.0,
            "target_norm_levels": 0},
}


def with_mode_preset(cfg: AdaptConfig) -> AdaptConfig:
    """`cfg` with its mode's measured settings (MODE_PRESETS) in place of its own."""
    return replace(cfg, **MODE_PRESETS.get(cfg.mode, {}))

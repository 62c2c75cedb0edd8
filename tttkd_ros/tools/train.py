"""`tttkd train`: supervised source training (cross-entropy + lambda * KD, METHOD.md 4).

Single process by default; under `torchrun` (WORLD_SIZE > 1) each rank trains on its share of
the frames with DistributedDataParallel and rank 0 writes the checkpoints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tttkd_ros.core.adapt.losses import kd_loss
from tttkd_ros.core.adapt.objective import teacher_targets
from tttkd_ros.core.augment import (
    AugmentConfig,
    apply_transform,
    moved_extrinsic,
    random_intensity,
    random_keep,
    random_transform,
)
from tttkd_ros.core.config import TEACHER_DIMS, ModelConfig, TeacherConfig
from tttkd_ros.core.device.selection import resolve_device
from tttkd_ros.core.frame import CameraView
from tttkd_ros.core.intensity import IntensityReference
from tttkd_ros.core.labels import IGNORE_INDEX, lookup_train_ids
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.core.model.checkpoint import CLASS_SHARES_KEY, load_checkpoint, save_checkpoint
from tttkd_ros.core.model.feature_cache import FeatureCache
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher import DinoTeacher, teacher_fingerprint
from tttkd_ros.core.model.teacher_probe import EXTRA_KEY as PROBE_KEY
from tttkd_ros.core.model.teacher_probe import TeacherProbe, class_balance_weights, fit_probe
from tttkd_ros.core.model.voxelize import voxelize
from tttkd_ros.data.kitti import load_label_map, read_sequence

# the sensor and scene variation a source model is trained to shrug off; "basic" is the set
# before the synthetic world was calibrated to real scans, kept for comparison
AUGMENTS = {
    "full": AugmentConfig(),
    "basic": AugmentConfig(tilt_deg=0.0, height_m=0.0, intensity_gain=(1.0, 1.0),
                           intensity_gamma=(1.0, 1.0), dropout=(0.0, 0.0)),
}


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd train`'s parser (tools/cli.py makes it)."""
    p.add_argument("--data", required=True, help="dataset root (holds sequences/SS/...)")
    p.add_argument("--out", required=True, help="checkpoint to write (best); last goes beside it")
    p.add_argument("--train-seqs", default="00", help="comma-separated training sequences")
    p.add_argument("--val-seqs", default="", help="validation sequences (default: none)")
    p.add_argument("--label-map", default="", metavar="YAML",
                   help="the class set, in semantic-kitti.yaml's format (labels, color_map, "
                        "learning_map, learning_map_inv); default SemanticKITTI's 19")
    p.add_argument("--init", default="", metavar="CKPT",
                   help="start from this checkpoint's weights and model settings (backbone, "
                        "head, voxel size, intensity), e.g. to pair a trained model with "
                        "another teacher; its class set must be the one trained")
    p.add_argument("--backbone", default="tiny", choices=["tiny", "base"])
    p.add_argument("--head", default="linear", choices=["linear", "mlp"])
    p.add_argument("--voxel-size", type=float, default=0.1)
    p.add_argument("--no-intensity", action="store_true",
                   help="train a model that ignores intensity (for sensors whose intensity "
                        "is not comparable with the training data's)")
    p.add_argument("--augment", default="full", choices=sorted(AUGMENTS),
                   help="full: rotation, flip, scale, tilt, height, intensity gain and gamma, "
                        "dropout, jitter (default); basic: rotation, flip, scale, jitter")
    p.add_argument("--teacher", default="vit_small_patch14_dinov2", choices=sorted(TEACHER_DIMS))
    p.add_argument("--teacher-weights", default="", help="local DINOv2 weight file")
    p.add_argument("--teacher-height", type=int, default=224)
    p.add_argument("--kd-weight", type=float, default=1.0, help="lambda of the KD term; 0 = off")
    p.add_argument("--kd-features", default="centred", choices=["centred", "plain"],
                   help="what rho_2D learns, and adaptation then distils: the teacher's features "
                        "centred on each cloud's mean (default; README: distilling centred "
                        "features) or as they are (checkpoints before the option)")
    p.add_argument("--class-balance", type=float, default=0.5,
                   help="cross-entropy class weights = frequency^-POWER (0 = unweighted)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=2, help="clouds per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long; 0 = off")
    p.add_argument("--cache", default="",
                   help="teacher feature cache folder (default: beside --out)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last state beside --out")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = train(args)
    print(json.dumps(summary, indent=2))
    return 0


def teacher_record(tcfg: TeacherConfig) -> dict:
    """The teacher a checkpoint is trained with, as the engine checks it at start-up."""
    return {"name": tcfg.name, "weights": teacher_fingerprint(tcfg),
            "weights_file": Path(tcfg.weights).name if tcfg.weights not in ("", "hub") else "",
            "image_height": tcfg.image_height}


def cache_key(tcfg: TeacherConfig) -> str:
    """The teacher's identity in the feature cache (its name, input height and weights)."""
    return f"{tcfg.name}:{tcfg.image_height}:{tcfg.weights or f'random{tcfg.seed}'}"


def training_frames(root: str, seqs: str) -> list:
    out = []
    for seq in filter(None, seqs.split(",")):
        sequence = read_sequence(root, seq.strip())
        out.extend(sequence[i] for i in range(len(sequence)))
    return out


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def train(args: argparse.Namespace) -> dict:
    rank, world = _distributed()
    device = resolve_device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + rank)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.stem + ".last.pt")

    tcfg = TeacherConfig(name=args.teacher, weights=args.teacher_weights,
                         image_height=args.teacher_height)
    classes = load_label_map(args.label_map)
    lut = classes.lut()
    if args.init:
        start = load_checkpoint(args.init, device, expect={
            "num_classes": len(classes.class_names), "feat_dim": tcfg.feat_dim})
        model, mcfg = start.model, start.cfg
    else:
        mcfg = ModelConfig(backbone=args.backbone, head=args.head, voxel_size=args.voxel_size,
                           feat_dim=tcfg.feat_dim, num_classes=len(classes.class_names),
                           use_intensity=not args.no_intensity)
        model = build_model(mcfg, device)
    # the head learns (again, from --init) the features as --kd-features defines them
    model.cfg = mcfg = replace(mcfg, kd_center=args.kd_features == "centred")
    all_train_frames = training_frames(args.data, args.train_seqs)
    train_frames = all_train_frames[rank::world]
    val_frames = training_frames(args.data, args.val_seqs) if rank == 0 else []
    if not train_frames:
        raise SystemExit(f"no training frames found in {args.data} (sequences {args.train_seqs})")
    # the units the model learns intensity in, so that inputs in others can be scaled to
    # them; from every training frame (each rank reads them all), as with one process
    intensity = IntensityReference.of(f.points[:, 3] for f in all_train_frames)
    del all_train_frames  # each rank keeps only its share

    teacher = None
    if args.kd_weight > 0 and any(f.cameras for f in train_frames):
        cache_root = Path(args.cache) if args.cache else out.parent / "teacher_cache"
        teacher = FeatureCache(DinoTeacher(tcfg, device), cache_root, cache_key(tcfg))

    steps_per_epoch = max(1, len(train_frames) // args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start_epoch, best = 0, -math.inf  # the first epoch is the best so far, whatever its score
    history: list[dict] = []
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best"])
        history = json.loads(state["history"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)

    class_weight = balanced_weights(train_frames, lut, mcfg.num_classes,
                                    args.class_balance).to(device)
    extra = {"intensity": intensity.to_dict(),
             "teacher": teacher_record(tcfg),
             CLASS_SHARES_KEY: class_shares(train_frames, lut, mcfg.num_classes,
                                            mcfg.voxel_size)}
    if teacher is not None and rank == 0:  # the probe depends on the teacher, not the model
        probe = teacher_probe(train_frames, teacher, lut, mcfg.num_classes, device)
        if probe is not None:
            extra[PROBE_KEY] = probe.to_extra()
    augment = AUGMENTS[args.augment]
    t_start = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = rng.permutation(len(train_frames))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=rank != 0)
        for step in bar:
            batch = [train_frames[i]
                     for i in order[step * args.batch_size:(step + 1) * args.batch_size]]
            loss, parts = _train_step(net, model, batch, lut, teacher, args, augment, rng,
                                      device, class_weight)
            for group in opt.param_groups:
                group["lr"] = learning_rate(args.lr, epoch * steps_per_epoch + step, total_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(parts)
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
        epoch_log = {"epoch": epoch + 1, **{k: float(np.mean([p[k] for p in losses]))
                                            for k in losses[0]}}
        if rank == 0:
            if val_frames:
                epoch_log["val_miou"] = evaluate(model, val_frames, lut, device)
            score = epoch_log.get("val_miou", -epoch_log["loss"])
            history.append(epoch_log)
            if "kd" in epoch_log:  # the distillation loss the model reached with this teacher
                extra["teacher"]["kd_loss"] = epoch_log["kd"]
            tqdm.write(json.dumps(epoch_log))
            save_checkpoint(out.with_name(out.stem + ".last.ckpt"), model, mcfg,
                            class_names=list(classes.class_names), palette=classes.palette,
                            teacher_name=tcfg.name,
                            extra={**extra, "history": json.dumps(history)})
            if score > best:
                best = score
                save_checkpoint(out, model, mcfg, class_names=list(classes.class_names),
                                palette=classes.palette,
                                teacher_name=tcfg.name,
                                extra={**extra, "history": json.dumps(history)})
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "epoch": epoch, "best": best,
                        "history": json.dumps(history)}, state_path)
        if args.max_minutes and time.monotonic() - t_start > args.max_minutes * 60:
            break
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"checkpoint": str(out), "epochs": len(history), "best": best, "history": history,
            "minutes": (time.monotonic() - t_start) / 60}


def probe_points(frames, teacher, lut: np.ndarray, num_classes: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher features (M, D) and classes (M,) of every labelled point a camera sees."""
    features, labels = [], []
    for frame in tqdm(frames, desc="teacher probe: features", leave=False):
        if not frame.cameras:
            continue
        xyz = torch.from_numpy(np.ascontiguousarray(frame.points[:, :3])).to(device)
        with torch.no_grad():
            targets = teacher_targets(teacher, xyz, frame.cameras)
        classes = lookup_train_ids(lut, frame.labels)
        classes = torch.from_numpy(classes.astype(np.int64))[targets.point_index.cpu()]
        known = classes < num_classes
        features.append(targets.features.cpu()[known])
        labels.append(classes[known])
    if not features:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)


def teacher_probe(frames, teacher, lut: np.ndarray, num_classes: int, device: torch.device
                  ) -> TeacherProbe | None:
    """The teacher probe fitted on the frames' visible points (label-level distillation);
    None, with a line saying so, when no labelled point is visible in any camera."""
    features, labels = probe_points(frames, teacher, lut, num_classes, device)
    if len(labels) == 0:
        tqdm.write("teacher probe: no labelled point is visible in a camera; the checkpoint "
                   "gets no probe (adaptation's w_probe then has no effect)")
        return None
    probe = fit_probe(features, labels, num_classes)
    tqdm.write(f"teacher probe: {len(labels)} points, accuracy {probe.accuracy:.3f}")
    return probe


def learning_rate(peak: float, step: int, total: int, warmup: float = 0.1) -> float:
    """Linear warm-up over the first 10 % of the steps, then cosine decay to zero.

    A function of the global step (not a scheduler object), so a resumed run with a
    different --epochs follows the schedule of its new length."""
    warm = max(1, int(warmup * total))
    if step < warm:
        return peak * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """`counts` summed over the torchrun ranks, each of which counted its own share of the
    frames, so that every rank (and the checkpoint) gets the whole training set's."""
    if not torch.distributed.is_initialized():
        return counts
    on_gpu = torch.distributed.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    total = counts.to(f"cuda:{torch.cuda.current_device()}" if on_gpu else "cpu")
    torch.distributed.all_reduce(total)
    return total.cpu()


def balanced_weights(frames, lut: np.ndarray, num_classes: int, power: float) -> torch.Tensor:
    """Cross-entropy weights of the frames' classes (`class_balance_weights`)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for frame in frames:
        train_ids = lookup_train_ids(lut, frame.labels)
        counts += np.bincount(train_ids[train_ids < num_classes], minlength=num_classes)
    return class_balance_weights(summed_over_ranks(torch.from_numpy(counts)), power).float()


def class_shares(frames, lut: np.ndarray, num_classes: int, voxel_size: float) -> list[float]:
    """Each class's share of the frames' labelled voxels, a voxel counted once and split
    among its points' classes (core/adapt/class_mix.py weighs test-time statistics by it)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for frame in frames:
        train_ids = torch.from_numpy(lookup_train_ids(lut, frame.labels)
                                     .astype(np.int64))
        grid = voxelize([torch.from_numpy(np.asarray(frame.points, np.float32))], voxel_size)
        per_voxel = torch.bincount(grid.inverse).double()
        labelled = train_ids < num_classes
        counts.index_add_(0, train_ids[labelled], 1.0 / per_voxel[grid.inverse[labelled]])
    counts = summed_over_ranks(counts)
    return (counts / counts.sum().clamp_min(1.0)).tolist()


def _train_step(net, model, batch, lut: np.ndarray, teacher, args, augment: AugmentConfig,
                rng: np.random.Generator, device: torch.device, class_weight: torch.Tensor
                ) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on labeled points + lambda * KD on the points some camera sees."""
    clouds, labels, views = [], [], []
    for frame in batch:
        A = random_transform(augment, rng)
        keep = random_keep(augment, len(frame.points), rng)
        points = apply_transform(frame.points[keep], A, augment.jitter_m, rng)
        points[:, 3] = random_intensity(augment, points[:, 3], rng)
        clouds.append(torch.from_numpy(points).to(device))
        train_ids = lookup_train_ids(lut, np.asarray(frame.labels)[keep])
        labels.append(torch.from_numpy(train_ids.astype(np.int64)).to(device))
        views.append([CameraView(v.name, v.image, v.K, moved_extrinsic(v.T_cam_lidar, A), v.D)
                      for v in frame.cameras])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = net(voxelize(clouds, model.cfg.voxel_size))
    target = torch.cat(labels)
    ce = F.cross_entropy(out.logits.float(), target, weight=class_weight,
                         ignore_index=IGNORE_INDEX)
    parts = {"ce": float(ce.detach())}
    loss = ce
    if teacher is not None:
        offset, kd_terms = 0, []
        for cloud, cams in zip(clouds, views):
            if cams:
                with torch.no_grad():
                    t = teacher_targets(teacher, cloud[:, :3], cams)
                if len(t):
                    kd_terms.append(kd_loss(out.feat2d[offset + t.point_index].float(),
                                            t.features, model.cfg.kd_center))
            offset += len(cloud)
        if kd_terms:
            kd = torch.stack(kd_terms).mean()
            parts["kd"] = float(kd.detach())
            loss = loss + args.kd_weight * kd
    parts["loss"] = float(loss.detach())
    return loss, parts


@torch.no_grad()
def evaluate(model, frames, lut: np.ndarray, device: torch.device) -> float:
    """mIoU (percent) of the model on frames with labels, source BN statistics."""
    model.eval()
    cm = ConfusionMatrix(model.cfg.num_classes)
    for frame in frames:
        pts = torch.from_numpy(frame.points).to(device)
        pred = model(voxelize([pts], model.cfg.voxel_size)).logits.argmax(1).cpu().numpy()
        cm.update(lookup_train_ids(lut, frame.labels), pred)
    return cm.miou()


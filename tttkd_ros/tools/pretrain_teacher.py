"""`tttkd pretrain-teacher`: a DINOv2-architecture teacher trained on the synthetic world.

Meta's DINOv2 weights cannot be downloaded on a machine without internet, and a randomly
initialised ViT gives distillation targets with no semantics. This tool trains timm's
`vit_small_patch14_dinov2` from scratch on the synthetic world's camera images, across
towns and camera conditions, as a stand-in: every 14 x 14 patch learns, through a linear
probe that is then dropped, the class histogram of its pixels (from the renderer's label
image; sky is a class of its own), under exposure, gamma, blur and flip augmentation. The
patch features then carry the scene's semantics and shrug off the camera's conditions, the
two properties the method relies on in DINOv2. It is supervised, so it is a stand-in for the
real weights' semantics, not a reproduction of DINOv2's self-supervised training.

Writes a timm state dict (`teacher.weights` / `--teacher-weights` load it) and a JSON
beside it with the settings and per-condition patch accuracy on held-out drives.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm import tqdm

from tttkd_ros.core.labels import CLASS_NAMES, IGNORE_INDEX, raw_to_train_lut
from tttkd_ros.core.model.teacher import resized_unit_image
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.shifts import get_shift
from tttkd_ros.tools.synth import parse_overrides
from tttkd_ros.tools.train import learning_rate

# camera conditions and towns the teacher sees: the source town, another town, and every
# camera-side preset; LiDAR-only presets render the same images as clean
CONDITIONS = ("clean", "town", "dark", "bright", "blur", "fog", "rain")
SKY = len(CLASS_NAMES)  # the teacher's extra class
HEIGHTS = (112, 168)  # resized input heights, cycled: full images at two scales


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd pretrain-teacher`'s parser (tools/cli.py makes it)."""
    p.add_argument("--out", required=True, help="weights file to write (.pth)")
    p.add_argument("--model", default="vit_small_patch14_dinov2")
    p.add_argument("--drives", type=int, default=3, help="drives per condition")
    p.add_argument("--frames", type=int, default=12, help="frames per drive")
    p.add_argument("--towns", type=int, default=2,
                   help="extra town layouts (town_seed 1..N) rendered under clean")
    p.add_argument("--held-out-frames", type=int, default=4,
                   help="frames per condition of the held-out drive (accuracy in the JSON)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time")
    p.add_argument("--steps", type=int, default=0,
                   help="train exactly this many steps instead of for --minutes: the same "
                        "weights on a fast or a busy machine (0 = bound by --minutes)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-every", type=float, default=0.0, metavar="MIN",
                   help="measure the held-out patch accuracy every MIN minutes (the JSON's "
                        "held_out_curve shows whether it still rises); 0 = only at the end")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="synthetic-world setting, e.g. image_scale=0.5")
    p.add_argument("--seed", type=int, default=1000, help="first drive seed")
    p.set_defaults(func=run)


def render_set(conditions: list[tuple[str, dict]], drives: int, frames: int, seed: int,
               world: dict) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(image H x W x 3 uint8, class image H x W uint8, condition) for every camera of every
    frame; class image: train id, SKY, or IGNORE_INDEX."""
    lut = raw_to_train_lut()
    out = []
    jobs = [(name, extra, seed + k) for name, extra in conditions for k in range(drives)]
    for name, extra, drive_seed in tqdm(jobs, desc="render", unit="drive"):
        for frame in generate_drive(name, frames, drive_seed, **{**world, **extra}):
            for view in frame.cameras:
                raw = frame.label_images[view.name] & 0xFFFF
                classes = np.where(raw == 0, SKY, lut[raw]).astype(np.uint8)
                out.append((view.image, classes, name))
    return out


def patch_targets(classes: np.ndarray, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, SKY + 1) class histogram of each patch's pixels, each row summing to 1
    (0 for a patch with no labeled pixel); patch (r, c) covers the same image fraction as
    the resized image's patch."""
    h, w = classes.shape
    r = np.arange(h) * rows // h
    c = np.arange(w) * cols // w
    cell = (r[:, None] * cols + c[None, :]).ravel()
    cls = classes.ravel().astype(np.int64)
    ok = cls != IGNORE_INDEX
    hist = np.bincount(cell[ok] * (SKY + 1) + cls[ok], minlength=rows * cols * (SKY + 1))
    hist = hist.reshape(rows * cols, SKY + 1).astype(np.float32)
    return torch.from_numpy(hist / np.maximum(hist.sum(1, keepdims=True), 1.0))


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Photometric jitter on a (B, 3, h, w) [0, 1] batch: exposure, gamma, blur."""
    gain = torch.tensor(rng.uniform(0.35, 1.8, (len(x), 1, 1, 1)), dtype=x.dtype)
    gamma = torch.tensor(rng.uniform(0.7, 1.4, (len(x), 1, 1, 1)), dtype=x.dtype)
    x = (x * gain).clamp(0, 1) ** gamma
    if rng.random() < 0.3:
        x = gaussian_blur(x, kernel_size=7, sigma=float(rng.uniform(0.5, 2.0)))
    return x


class PatchClassifier(torch.nn.Module):
    """The ViT (as the teacher runs it: forward_features, prefix tokens dropped) and a
    linear probe on every patch token."""

    def __init__(self, model_name: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.vit = timm.create_model(model_name, pretrained=False, num_classes=0,
                                     dynamic_img_size=True)
        self.probe = torch.nn.Linear(self.vit.num_features, SKY + 1)
        cfg = self.vit.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1))
        self.patch = self.vit.patch_embed.patch_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features((x - self.mean) / self.std)
        return self.probe(tokens[:, self.vit.num_prefix_tokens:])  # (B, rows * cols, classes)


def _batch(samples, height: int, patch: int, flip: bool = False):
    """Images resized to `height` (1, 3, h, w) [0, 1] and their patch targets; `flip`
    mirrors both left-right."""
    x = torch.cat([resized_unit_image(img, height, patch) for img, _, _ in samples])
    rows, cols = x.shape[2] // patch, x.shape[3] // patch
    y = torch.stack([patch_targets(cls, rows, cols) for _, cls, _ in samples])
    if flip:
        x = x.flip(3)
        y = y.view(len(samples), rows, cols, -1).flip(2).reshape(len(samples), rows * cols, -1)
    return x, y


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over patches with labeled pixels of -sum target * log_softmax(logits)."""
    valid = target.sum(-1) > 0
    loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1)
    return loss[valid].mean()


@torch.no_grad()
def patch_accuracy(net: PatchClassifier, samples, height: int = 168) -> dict[str, float]:
    """Per condition: the share of labeled patches whose predicted class is the patch's
    majority class (percent), at the deployed input height."""
    net.eval()
    hits: dict[str, list[int]] = {}
    for sample in samples:
        x, y = _batch([sample], height, net.patch)
        pred = net(x)[0].argmax(-1)
        valid = y[0].sum(-1) > 0
        ok = (pred == y[0].argmax(-1))[valid]
        h = hits.setdefault(sample[2], [0, 0])
        h[0] += int(ok.sum())
        h[1] += int(valid.sum())
    net.train()
    return {name: 100.0 * a / max(b, 1) for name, (a, b) in hits.items()}


def _curve_point(net: PatchClassifier, held_out, step: int, elapsed_s: float) -> dict:
    """Mean held-out patch accuracy over the conditions at this point of the run."""
    accuracy = patch_accuracy(net, held_out)
    net.train()
    return {"minutes": round(elapsed_s / 60.0, 2), "steps": step,
            "mean_accuracy": round(float(np.mean(list(accuracy.values()))), 2)}


def run(args: argparse.Namespace) -> int:
    try:
        world = parse_overrides(args.set)
        get_shift("clean", **world)  # an unknown setting fails before any rendering
        if min(args.minutes, args.drives, args.frames, args.held_out_frames,
               args.batch_size) <= 0 or args.steps < 0:
            raise ValueError("--minutes, --drives, --frames, --held-out-frames and "
                             "--batch-size must be positive, --steps at least 0")
    except (ValueError, TypeError) as err:
        print(f"tttkd pretrain-teacher: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    conditions = [(c, {}) for c in CONDITIONS]
    conditions += [("clean", {"town_seed": k}) for k in range(1, args.towns + 1)]
    train_set = render_set(conditions, args.drives, args.frames, args.seed, world)
    held_out = render_set([(c, {}) for c in CONDITIONS], 1, args.held_out_frames,
                          args.seed + 500, world)

    rng = np.random.default_rng(args.seed)
    net = PatchClassifier(args.model, args.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    budget_s = args.minutes * 60.0
    t0, step, losses = time.monotonic(), 0, []
    curve: list[dict] = []  # held-out accuracy along the run, to see it plateau
    next_eval = args.eval_every * 60.0
    bar = (tqdm(total=args.steps, desc="pretrain teacher", unit="step") if args.steps else
           tqdm(total=math.ceil(budget_s), desc="pretrain teacher", unit="s"))
    while True:
        elapsed = time.monotonic() - t0
        done = step / args.steps if args.steps else elapsed / budget_s  # share of the budget
        if done >= 1.0:
            break
        if args.eval_every and elapsed >= next_eval:
            curve.append(_curve_point(net, held_out, step, elapsed))
            tqdm.write(json.dumps(curve[-1]))
            next_eval += args.eval_every * 60.0
        for group in opt.param_groups:  # schedule on the share of the budget used
            group["lr"] = learning_rate(args.lr, int(1000 * done), 1000)
        picks = rng.choice(len(train_set), args.batch_size, replace=False)
        x, y = _batch([train_set[i] for i in picks], HEIGHTS[step % len(HEIGHTS)],
                      net.patch, flip=rng.random() < 0.5)
        loss = soft_cross_entropy(net(augment(x, rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1 if args.steps else round(time.monotonic() - t0 - bar.n))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    torch.save(net.vit.state_dict(), out)
    summary = {
        "weights": str(out), "model": args.model, "steps": step,
        "minutes": round((time.monotonic() - t0) / 60.0, 2),
        "images": len(train_set), "conditions": list(CONDITIONS), "extra_towns": args.towns,
        "world": world, "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "held_out_patch_accuracy": patch_accuracy(net, held_out),
        "held_out_curve": curve,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0

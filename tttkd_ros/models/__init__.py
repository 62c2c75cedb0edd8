"""The trained models this package ships (see the README's "Trained models")."""
from __future__ import annotations

from pathlib import Path

# A `tiny` source model for a KITTI-like HDL-64E (SemanticKITTI's 19 classes), trained on
# the calibrated synthetic world; distils from a DINOv2 ViT-S/14 with seeded random weights
# at image height 112, the teacher every install can rebuild without a download.
SOURCE_TINY = Path(__file__).with_name("source_tiny_hdl64.pt")


def shipped_source() -> Path:
    """The shipped source checkpoint; FileNotFoundError says how to get one otherwise."""
    if not SOURCE_TINY.exists():
        raise FileNotFoundError(
            f"{SOURCE_TINY} is missing from this install; reinstall the package, or train "
            "a source model with `tttkd train` (README: Training on your data)")
    return SOURCE_TINY

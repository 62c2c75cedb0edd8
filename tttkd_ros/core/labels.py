"""SemanticKITTI's label ids, 19-class learning map and colours.

Raw ids are the ones stored in the dataset's .label files (lower 16 bits); train ids are
0..18 in the order of `CLASS_NAMES`; raw ids that map to "unlabeled" get IGNORE_INDEX.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

# raw id -> name, as in semantic-kitti.yaml
RAW_LABELS: dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist",
    32: "motorcyclist", 40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking",
    70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign",
    99: "other-object", 252: "moving-car", 253: "moving-bicyclist", 254: "moving-person",
    255: "moving-motorcyclist", 256: "moving-on-rails", 257: "moving-bus",
    258: "moving-truck", 259: "moving-other-vehicle",
}

# raw id -> learning id (0 = unlabeled, 1..19 = classes), as in semantic-kitti.yaml
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

# learning id 1..19 -> name; train id = learning id - 1
CLASS_NAMES: list[str] = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
]

# learning id -> representative raw id (learning_map_inv in semantic-kitti.yaml)
LEARNING_MAP_INV: dict[int, int] = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48,
    12: 49, 13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}

# raw id -> BGR colour, as in semantic-kitti.yaml
COLOR_MAP_BGR: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (0, 0, 255), 10: (245, 150, 100), 11: (245, 230, 100),
    13: (250, 80, 100), 15: (150, 60, 30), 16: (255, 0, 0), 18: (180, 30, 80),
    20: (255, 0, 0), 30: (30, 30, 255), 31: (200, 40, 255), 32: (90, 30, 150),
    40: (255, 0, 255), 44: (255, 150, 255), 48: (75, 0, 75), 49: (75, 0, 175),
    50: (0, 200, 255), 51: (50, 120, 255), 52: (0, 150, 255), 60: (170, 255, 150),
    70: (0, 175, 0), 71: (0, 60, 135), 72: (80, 240, 150), 80: (150, 240, 255),
    81: (0, 0, 255), 99: (255, 255, 50), 252: (245, 150, 100), 253: (200, 40, 255),
    254: (30, 30, 255), 255: (90, 30, 150), 256: (255, 0, 0), 257: (250, 80, 100),
    258: (180, 30, 80), 259: (255, 0, 0),
}


def raw_to_train_lut() -> np.ndarray:
    """A 65536-entry lookup table: raw semantic id (lower 16 bits) -> train id."""
    lut = np.full(1 << 16, IGNORE_INDEX, dtype=np.uint8)
    for raw, learn in LEARNING_MAP.items():
        if learn > 0:
            lut[raw] = learn - 1
    return lut


def lookup_train_ids(lut: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Train ids of raw .label values (uint32, instance in the upper 16 bits) through a
    65536-entry lookup table of semantic id -> train id."""
    return lut[np.asarray(raw, dtype=np.uint32) & 0xFFFF]


def raw_to_train(raw: np.ndarray) -> np.ndarray:
    """Map raw .label values to train ids with the default learning map."""
    return lookup_train_ids(raw_to_train_lut(), raw)


def train_to_raw(train: np.ndarray) -> np.ndarray:
    """Map train ids back to representative raw ids (IGNORE_INDEX -> 0)."""
    lut = np.zeros(256, dtype=np.uint32)
    for learn, raw in LEARNING_MAP_INV.items():
        if learn > 0:
            lut[learn - 1] = raw
    return lut[np.asarray(train, dtype=np.int64)]


def palette_rgb() -> np.ndarray:
    """19 x 3 uint8 RGB colours in train-id order."""
    bgr = [COLOR_MAP_BGR[LEARNING_MAP_INV[i + 1]] for i in range(len(CLASS_NAMES))]
    return np.array(bgr, dtype=np.uint8)[:, ::-1].copy()


@dataclass(frozen=True)
class LabelMap:
    """A class set: class names and RGB palette in train-id order, and the map from the raw
    ids of the .label files to train ids (IGNORE_INDEX for ignored ids). SemanticKITTI's 19
    classes by default; any other set from a label map in semantic-kitti.yaml's format."""

    class_names: tuple[str, ...]
    palette: np.ndarray  # (C, 3) uint8 RGB
    learning_map: dict[int, int]  # raw id -> learning id: 0 ignored, 1..C the classes

    @classmethod
    def semantic_kitti(cls) -> LabelMap:
        return cls(tuple(CLASS_NAMES), palette_rgb(), dict(LEARNING_MAP))

    @classmethod
    def from_dict(cls, data: dict, source: str = "label map") -> LabelMap:
        """From semantic-kitti.yaml's keys: `labels` (raw id -> name), `color_map` (raw id ->
        BGR), `learning_map` (raw id -> learning id, 0 = ignored) and `learning_map_inv`
        (learning id -> the raw id that names and colours it). Raises ValueError naming
        what is missing or inconsistent."""
        missing = [k for k in ("labels", "color_map", "learning_map", "learning_map_inv")
                   if k not in data]
        if missing:
            raise ValueError(f"{source} lacks {missing} (semantic-kitti.yaml's format)")
        inv = {int(k): int(v) for k, v in data["learning_map_inv"].items()}
        ids = sorted(k for k in inv if k > 0)
        if ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"{source}: learning ids must be 1..C (0 = ignored), got {ids}")
        try:
            names = tuple(str(data["labels"][inv[i]]) for i in ids)
            bgr = [data["color_map"][inv[i]] for i in ids]
        except KeyError as err:
            raise ValueError(f"{source}: raw id {err} of learning_map_inv has no name in "
                             "labels or no colour in color_map") from None
        learning = {int(k): int(v) for k, v in data["learning_map"].items()}
        if any(v not in (0, *ids) for v in learning.values()):
            raise ValueError(f"{source}: learning_map uses ids outside 0..{len(ids)}")
        palette = np.array(bgr, dtype=np.uint8).reshape(-1, 3)[:, ::-1].copy()
        return cls(names, palette, learning)

    def lut(self) -> np.ndarray:
        """A 65536-entry lookup table: raw id (lower 16 bits) -> train id."""
        table = np.full(1 << 16, IGNORE_INDEX, dtype=np.uint8)
        for raw, learn in self.learning_map.items():
            if learn > 0:
                table[raw] = learn - 1
        return table

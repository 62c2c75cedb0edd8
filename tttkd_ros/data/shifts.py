"""The synthetic world's configuration and its domain-shift presets.

`clean` is the source domain: a KITTI-like HDL-64E and cam2 in the default town. Every other
preset changes one thing, LiDAR side (sensor, noise, weather, town layout) or camera side
(exposure, blur), so an evaluation can tell which shift a method handles.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .camera import CameraConfig
from .imaging import ImagingConfig
from .lidar import LidarConfig
from .town import TownConfig
from .weather import WeatherConfig


@dataclass(frozen=True)
class SynthConfig:
    lidar: LidarConfig = field(default_factory=LidarConfig)
    cameras: tuple[CameraConfig, ...] = (CameraConfig(),)
    town: TownConfig = field(default_factory=TownConfig)
    weather: WeatherConfig = field(default_factory=WeatherConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    image_scale: float = 1.0  # render every camera at this fraction of its size
    speed: tuple[float, float] = (6.0, 11.0)  # range of the ego speed, m/s
    rate_hz: float = 10.0
    start_ns: int = 1_700_000_000_000_000_000  # stamp of frame 0


_SECTIONS = ("lidar", "town", "weather", "imaging")

# Named camera sets for `cameras=NAME`: KITTI's cam2 alone, or it and three copies turned
# 90, 180 and 270 deg (about 320 deg of the LiDAR's sweep in view instead of 80).
CAMERA_RIGS: dict[str, tuple[CameraConfig, ...]] = {
    "front": SynthConfig().cameras,
    "surround": (CameraConfig(), CameraConfig().yawed(90.0, "camera_left"),
                 CameraConfig().yawed(180.0, "camera_rear"),
                 CameraConfig().yawed(-90.0, "camera_right")),
}


def apply_overrides(config: SynthConfig, **overrides: Any) -> SynthConfig:
    """Replace fields: a SynthConfig field by its name (`image_scale=0.25`,
    `lidar=LidarConfig(...)`), a sub-config field as SECTION_FIELD (`lidar_beams=16`,
    `town_seed=3`, `weather_scatter_prob=0.1`, `imaging_blur_sigma=1`), and a field of
    every camera as camera_FIELD (`camera_D=(0.1, 0, 0, 0, 0)`); `cameras` also takes the
    name of a rig in CAMERA_RIGS (`cameras=surround`)."""
    top = {f.name for f in fields(SynthConfig)}
    for key, value in overrides.items():
        section, _, name = key.partition("_")
        if key == "cameras" and isinstance(value, str):
            if value not in CAMERA_RIGS:
                raise ValueError(f"unknown camera rig {value!r}; known: {sorted(CAMERA_RIGS)}")
            config = replace(config, cameras=CAMERA_RIGS[value])
        elif key in top:
            config = replace(config, **{key: value})
        elif section in _SECTIONS and name in {f.name for f in fields(getattr(config,
                                                                              section))}:
            config = replace(config, **{section: replace(getattr(config, section),
                                                         **{name: value})})
        elif section == "camera" and name in {f.name for f in fields(CameraConfig)}:
            config = replace(config, cameras=tuple(replace(c, **{name: value})
                                                   for c in config.cameras))
        else:
            raise TypeError(f"unknown synthetic-world setting {key!r}")
    return config


_CLEAN = SynthConfig()


def _preset(**overrides: Any) -> SynthConfig:
    return apply_overrides(_CLEAN, **overrides)


# name -> (what it changes, config)
SHIFTS: dict[str, tuple[str, SynthConfig]] = {
    "clean": ("source domain: HDL-64E, KITTI cam2, default town", _CLEAN),
    "beams32": ("HDL-32E-like: 32 uniform beams +10.7..-30.7 deg, 0.16 deg, 100 m",
                _preset(lidar_beams=32, lidar_fov_up_deg=10.67, lidar_fov_down_deg=-30.67,
                        lidar_layout="uniform", lidar_azimuth_res_deg=0.16,
                        lidar_max_range=100.0)),
    "beams16": ("VLP-16-like: 16 uniform beams +-15 deg, 0.2 deg, 100 m",
                _preset(lidar_beams=16, lidar_fov_up_deg=15.0, lidar_fov_down_deg=-15.0,
                        lidar_layout="uniform", lidar_azimuth_res_deg=0.2,
                        lidar_max_range=100.0)),
    "range_noise": ("range noise sigma 0.10 m (clean: 0.02 m)",
                    _preset(lidar_range_noise=0.10)),
    "dropout": ("40 % of returns lost at random", _preset(lidar_dropout=0.4)),
    "intensity": ("other intensity calibration: gain 0.5, gamma 0.6, per-beam spread 25 %",
                  _preset(lidar_intensity_gain=0.5, lidar_intensity_gamma=0.6,
                          lidar_beam_gain_sigma=0.25)),
    "fog": ("fog: droplet returns near the sensor (label 1), extinction, camera haze 50 m",
            _preset(weather=WeatherConfig(scatter_prob=0.15, scatter_range=6.0,
                                          extinction=0.015, visibility=50.0))),
    "rain": ("rain: sparse droplet returns, wet dropout, dimmer camera, haze 250 m",
             _preset(weather=WeatherConfig(scatter_prob=0.03, scatter_range=10.0,
                                           extinction=0.003, wet_dropout=0.15,
                                           visibility=250.0, haze_color=(0.6, 0.62, 0.65)),
                     imaging_exposure=0.75)),
    "town": ("another town: new layout seed, 2 lanes each way, low houses, more greenery",
             _preset(town=TownConfig(seed=7, lanes=2, lane_width=3.25, sidewalk_width=2.0,
                                     parking_prob=0.3, building_prob=0.45,
                                     building_height=(3.5, 9.0), setback=(3.0, 10.0),
                                     tree_spacing=8.0, fence_prob=0.6, curve_amplitude=10.0,
                                     curve_wavelength=320.0, sun_azimuth_deg=250.0,
                                     sun_elevation_deg=25.0))),
    "dark": ("camera: under-exposed (x0.35), gamma 1.2, noisier",
             _preset(imaging=ImagingConfig(exposure=0.35, gamma=1.2, noise_std=5.0))),
    "bright": ("camera: over-exposed (x1.8)", _preset(imaging_exposure=1.8)),
    "blur": ("camera: Gaussian blur sigma 2 px", _preset(imaging_blur_sigma=2.0)),
}


# The benchmarks' and the demo's world (world overrides for get_shift / generate_drive): the
# synthetic HDL-64E at an eighth of its azimuth resolution (~16k points) and half-size
# images, so that a CPU adapts a frame in about a second and a full suite table runs in
# about an hour on two cores. Source checkpoints for it must be trained on it.
BENCH_WORLD: dict[str, Any] = {"lidar_azimuth_res_deg": 1.44, "image_scale": 0.5}


def list_shifts() -> list[str]:
    """Preset names, `clean` first."""
    return list(SHIFTS)


def get_shift(name: str, **overrides: Any) -> SynthConfig:
    """The preset `name` with overrides applied (see `apply_overrides`)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")
    return apply_overrides(SHIFTS[name][1], **overrides)

"""ament_python package setup; also installs with plain pip (ROS 2 Jazzy from PyPI as the
`ros` extra)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tttkd_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # the Fast DDS large-message profile and the shipped source model
    package_data={f"{PACKAGE}.ros": ["*.xml"], f"{PACKAGE}.models": ["*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "pillow",  # CompressedImage (JPEG / PNG) decoding, overlays
        "rosbags>=0.10",
        # torch and torchvision from the same index so that they load together (timm
        # imports torchvision); PyPI's default builds carry CUDA and also run on CPU.
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0",
        "scipy",  # bootstrap intervals of the benchmark tables
        # spconv wheels are per CUDA family: cu120 exists up to Python 3.11 only.
        "spconv-cu120; python_version < '3.12'",
        "spconv-cu126; python_version >= '3.12'",
    ],
    extras_require={
        # The ROS 2 Jazzy client library and messages from PyPI, for use outside a ROS install.
        "ros": [
            "ros-jazzy-rclpy[fastrtps]",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-std-msgs",
            "ros-jazzy-std-srvs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-rosgraph-msgs",
        ],
        # launch_testing's pytest plugin does not load on pytest >= 8.4.
        "test": ["pytest>=7.4,<8.4", "pytest-timeout", "hypothesis", "ruff", "catkin_pkg"],
    },
    zip_safe=False,  # the Fast DDS profile is read from its file
    maintainer="tttkd_ros maintainers",
    maintainer_email="maintainers@tttkd-ros.invalid",
    description=("Online test-time adaptation (TTT-KD + OCL) of sparse LiDAR segmentation "
                 "for ROS 2."),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "adapt_node = tttkd_ros.ros.node:main",
            "tttkd = tttkd_ros.tools.cli:main",
        ],
    },
)

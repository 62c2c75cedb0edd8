"""tttkd_ros: online test-time adaptation of a sparse 3D segmentation network in ROS 2."""

__version__ = "0.1.0"

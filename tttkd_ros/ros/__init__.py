"""The rclpy boundary: message <-> numpy conversion, synchronisation, the node."""

"""The engine: torch only, no ROS. Usable and testable wherever torch is installed."""

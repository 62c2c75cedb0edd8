"""The synthetic driving world, domain-shift presets and SemanticKITTI-layout I/O.

Modules: `drive` (SynthFrame, generate_drive), `shifts` (presets, list_shifts), `kitti`
(read_sequence, write_sequence, write_label_map); the rest build the world they render.
"""

LIDAR_FRAME_ID = "velodyne"  # frame_id of the LiDAR in synthetic and KITTI frames

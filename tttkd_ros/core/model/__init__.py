"""The network and what feeds it: voxelize, sparse backbone, segmentation model (two heads),
batch-norm prior, the frozen DINOv2 teacher, checkpoints and the teacher-feature cache."""

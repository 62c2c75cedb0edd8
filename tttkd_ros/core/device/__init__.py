"""The GPU data path: device choice, CUDA streams and events, host <-> device copies and the
one read-back per frame. On CPU every piece runs inline and copies nothing it need not."""

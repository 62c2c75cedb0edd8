"""The adaptation loop: the engine, its async schedule, the per-frame objective and losses,
weight restoration, the safety guards and the per-frame step budget."""

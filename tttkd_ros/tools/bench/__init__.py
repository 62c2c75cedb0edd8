"""`tttkd bench` and its suites: per-stage latency (the default), adaptation and stability
tables with their reports, the message-conversion and model timings, and the node soak."""

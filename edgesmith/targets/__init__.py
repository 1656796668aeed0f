"""Where models run: latency measurement on this machine (device specs and cost models come later)."""

"""The metric suite (backed by pyiqa, and basicsr's shipped NIQE parameters) and result tables."""

"""Training engine: accelerate-based trainer, checkpoints, EMA, logging, validation."""

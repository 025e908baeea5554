"""The contracts every other part of osir builds on; nothing here imports the engine, inference, metrics,
methods or commands."""

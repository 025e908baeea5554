"""OSEDiff (Wu et al., NeurIPS 2024): one-step real-world super-resolution on Stable Diffusion 2.1-base.

So far its parts: LoRA targets and adapters (``lora.py``), SD 2.1-base folder loading, the one-step
formula and the release's ``osediff.pkl`` (``components.py``).  The method class (training with VSD,
inference) is not registered yet.
"""

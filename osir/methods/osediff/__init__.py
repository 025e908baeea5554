"""OSEDiff (Wu et al., NeurIPS 2024): one-step real-world super-resolution on Stable Diffusion 2.1-base.

``method.py`` (the registered method: one-step restoration, L2 + LPIPS + VSD training with a shared-base
regulariser), ``lora.py`` (peft LoRA targets and adapters as released), ``components.py`` (SD 2.1-base
folder loading, the one-step formula, the release's ``osediff.pkl``), ``color.py`` (AdaIN / wavelet
colour correction), ``tiny.py`` (tiny random components for tests and the CPU demo), ``export.py``.
"""

"""Zero-shot restoration with pretrained diffusion priors (issue 25): an unconditional diffusion model trained on
clean images only (``adm.py``: the ADM U-Net of the released FFHQ and ImageNet priors) is steered towards a
degraded measurement at sampling time, without training for the degradation.  Nothing is imported when the
package is imported."""

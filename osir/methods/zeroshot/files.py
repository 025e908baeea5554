"""The file ``ZeroShot`` reads (``osir.core.files``), declared without torch: a released ADM prior, named with
the releases it may be (``adm.ADM_RELEASES`` holds their file names and pages; repeated here as plain text so
that this module imports nothing heavy)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, file_option, folder_option
from osir.core.registry import FILES

PRIOR = file_option("an ADM prior checkpoint: DPS's FFHQ 256 'ffhq_10m.pt' (github.com/DPS2022/"
                    "diffusion-posterior-sampling) or guided-diffusion's '256x256_diffusion_uncond.pt' "
                    "(github.com/openai/guided-diffusion)")

PRIOR_FOLDER = folder_option("a diffusers DDPM pipeline folder (model_index.json, unet/, scheduler/: e.g. a "
                             "google/ddpm-* pipeline from huggingface.co/google, saved locally)")

FILES.register(DeclaredFiles(paths={"prior_path": PRIOR, "prior_folder": PRIOR_FOLDER}), name="ZeroShot")

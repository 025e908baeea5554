"""IR-SDE's card (Luo et al., "Image Restoration with Mean-Reverting Stochastic Differential Equations",
ICML 2023): releases, weight detection, export, size contract and samplers.  See ``osir.core.card``."""
from osir.core.card import (CARDS, Detector, ExportName, FewSteps, MethodCard, Release, ReleaseFile, Sampling,
                            Tiling)

PAGE = "the IR-SDE weights folder linked from github.com/Algolzw/image-restoration-sde (Google Drive)"


def _weights(file: str, task: str) -> ReleaseFile:
    return ReleaseFile("g", file, PAGE, f"the IR-SDE {task} noise network (name as the release's test options give it)")


CARD = CARDS.register(MethodCard(
    name="irsde",
    title="IR-SDE",
    package=__package__,
    methods=("IRSDE",),
    noise_network="g",
    releases=(
        Release("irsde-denoise", "IR-SDE Gaussian denoising (lambda 70, T 1000, reverse ODE)", "irsde-denoise.yml",
                _weights("ir-sde.pth", "denoising")),
        Release("irsde-deraining", "IR-SDE deraining (Rain100H release: lambda 10, T 100, posterior sampler)",
                "irsde-deraining.yml", _weights("rain100h_sde.pth", "deraining")),
        Release("irsde-deblurring", "IR-SDE deblurring (GoPro release: lambda 10, T 100, reverse SDE)",
                "irsde-deblurring.yml", _weights("ir-sde.pth", "deblurring")),
        Release("irsde-sr-x4", "IR-SDE x4 super-resolution (lambda 30, T 100, reverse SDE from the bicubic LQ)",
                "irsde-sr-x4.yml", _weights("ir-sde.pth", "x4 super-resolution")),
        Release("irsde-inpainting", "IR-SDE inpainting (holes filled with white; lambda 30, T 100, reverse SDE)",
                "irsde-inpainting.yml", _weights("ir-sde.pth", "inpainting")),
        Release("irsde-demo", "IR-SDE demo denoiser (sigma 25, 10 posterior steps; options/demo.yml's run)",
                "irsde-demo.yml",
                ReleaseFile("g", "net_g_ema_latest.safetensors", "your run of options/demo.yml (experiments/demo/models/)",
                            "the demo's trained noise network"),
                verified="osir's own demo",
                few_steps=FewSteps("heun", 3, "5 network calls: -1.78 dB against 100 posterior steps, NIQE -0.13; "
                                   "the configured 10 posterior steps: -0.77 dB (benchmarks/fast_samplers.py, the "
                                   "held-out astronaut, 96x96 crop)")),
    ),
    detectors=(Detector("ConditionalUNet (IR-SDE)", "osir.methods.irsde.detect:conditional_unet", priority=1),),
    exports={"ConditionalUNet": "osir.methods.irsde.onnx:graphs"},
    export_names=(ExportName("irsde", "irsde-denoise"),),      # the network of every release but the demo's
    tiling=Tiling.SUPPORTED,
    sampling=Sampling(samplers=None, steps=True),
), name="irsde")

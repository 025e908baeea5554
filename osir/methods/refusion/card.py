"""Refusion's card (Luo et al., "Refusion: Enabling Large-Size Realistic Image Restoration with Latent-Space
Diffusion Models", CVPRW 2023): releases, weight detection, export, size contract and samplers.  See
``osir.core.card``."""
from osir.core.card import (CARDS, FEED_FORWARD, Detector, ExportName, FewSteps, MethodCard, Release, ReleaseFile,
                            Sampling, Tiling)

PAGE = "the Refusion weights folder linked from github.com/Algolzw/image-restoration-sde (Google Drive)"


def _weights(file: str, what: str) -> ReleaseFile:
    return ReleaseFile("g", file, PAGE, f"{what} (name as the release's test options give it)")


CARD = CARDS.register(MethodCard(
    name="refusion",
    title="Refusion",
    package=__package__,
    methods=("Refusion", "LatentRefusion", "RefusionCompression"),
    standin="osir.methods.refusion.standin:standins",
    noise_network="g",
    releases=(
        Release("refusion-shadow", "Refusion shadow removal (NAFNet, lambda 50, T 100, reverse SDE)",
                "refusion-shadow.yml", _weights("refusion.pth", "the Refusion shadow-removal NAFNet")),
        Release("refusion-lowlight", "Refusion low-light enhancement (entropy-refusion: 5-level NAFNet, lambda 50, "
                "T 100, posterior sampler)", "refusion-lowlight.yml",
                _weights("refusion.pth", "the entropy-Refusion low-light NAFNet")),
        Release("refusion-deraining", "Refusion deraining (NAFNet, lambda 50, T 100, reverse SDE)",
                "refusion-deraining.yml", _weights("refusion.pth", "the Refusion deraining NAFNet")),
        Release("refusion-dehazing", "latent Refusion HR dehazing (NAFNet on the compression model's latents; needs "
                "method.compression_path)", "refusion-dehazing.yml",
                _weights("refusion.pth", "the latent Refusion dehazing NAFNet"),
                needs=(ReleaseFile("method.compression_path", "latent_dehaze.pth", PAGE,
                                   "the stage-1 compression model (or a net_l_*.safetensors of an osir run)"),)),
        Release("refusion-demo", "Refusion demo denoiser (sigma 25, 10 posterior steps; options/refusion_demo.yml's "
                "run)", "refusion-demo.yml",
                ReleaseFile("g", "net_g_ema_latest.safetensors",
                            "your run of options/refusion_demo.yml (experiments/refusion_demo/models/)",
                            "the demo's trained NAFNet"),
                verified="osir's own demo",
                few_steps=FewSteps("posterior", 5, "+0.37 dB against 100 posterior steps, NIQE -1.77 "
                                   "(benchmarks/fast_samplers.py, the held-out astronaut, 96x96 crop)")),
    ),
    detectors=(Detector("ConditionalNAFNet (Refusion)", "osir.methods.refusion.detect:conditional_nafnet"),
               Detector("CompressionUNet (latent Refusion)", "osir.methods.refusion.detect:compression_unet")),
    exports={"ConditionalNAFNet": "osir.methods.refusion.onnx:nafnet_graphs",
             "CompressionUNet": "osir.methods.refusion.onnx:compression_graphs"},
    export_names=(ExportName("refusion", "refusion-shadow"),            # the NAFNet of shadow removal / deraining
                  ExportName("refusion-latent", "refusion-dehazing"),   # latent Refusion's NAFNet
                  ExportName("refusion-compression", "refusion-dehazing", "compression", "RefusionCompression")),
    tiling=Tiling.SUPPORTED,
    sampling=Sampling(samplers=None, steps=True),
    method_sampling={"RefusionCompression": FEED_FORWARD},
), name="refusion")

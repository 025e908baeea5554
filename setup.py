from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("osir/__init__.py").read_text(), version)

WEB = ["gradio>=6"]                                  # osir web (gr.ImageSlider, 6.x launch)
EXPORT = ["onnx", "onnxscript", "onnxruntime"]       # osir export onnx (+ --int8 quantisation)

setup(
    name="osir",
    version=version["__version__"],
    description="Open-source image restoration: IR-SDE, Refusion, DA-CLIP, OSEDiff, Real-ESRGAN in one toolbox",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["osir", "osir.*"]),
    package_data={"osir.methods.osediff": ["ram_data/*.txt"],   # RAM's tag list and thresholds (Apache-2.0)
                  "osir.methods": ["*/releases/*.yml"]},        # each method's release options (method cards)
    install_requires=[
        "torch>=2.6,<=2.14.1",          # torch.accelerator
        "torchvision>=0.21,<=0.29.1",
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "pydantic>=2",
        "accelerate>=0.30",
        "safetensors",
        "basicsr==1.4.2",
        "pyiqa>=0.1.10",
        "lion-pytorch",
        "tensorboard",
        "tqdm",
        "lmdb",
        "scikit-image",   # the demo's embedded photos
        "matplotlib",     # python -m osir.compare's per-image plots
        "diffusers>=0.30",        # OSEDiff: SD 2.1 components and schedulers (imported only by methods that use them)
        "peft>=0.12",             # LoRA
        "transformers>=5.0",      # text encoders, captioners, DAPE's BERT attention (5.x signatures)
        "open-clip-torch>=2.24",  # DA-CLIP
        "timm>=0.9",              # DAPE's Swin (RAM tagger)
        "spandrel>=0.4",          # osir restore / web: any architecture spandrel loads; RRDBNet / NAFNet detection
    ],
    # The core install trains, tests and restores with every method; the extras add the two tools that need
    # more (a missing one is named with its extra by osir.core.registry.missing_package).
    extras_require={"web": WEB, "export": EXPORT, "all": WEB + EXPORT,
                    # CI installs .[test]: everything, so that every test runs (selenium: the web page's browser test)
                    "test": WEB + EXPORT + ["pytest>=7", "pytest-timeout", "selenium>=4"]},
    # Registered entries, found by osir.core.registry.discover() and imported only when an options file
    # names them ("Name = module that registers it"); other packages add their own the same way.
    entry_points={
        "console_scripts": [
            "osir=osir.__main__:main",
            "osir-train=osir.train:main",
            "osir-test=osir.test:main",
            "osir-score=osir.metrics.__main__:main",
        ],
        "osir.methods": ["IRSDE = osir.methods.irsde.method", "RealESRGAN = osir.methods.realesrgan.method",
                         "OSEDiff = osir.methods.osediff.method"]
                        + [f"{name} = osir.methods.refusion.method" for name in
                           ("Refusion", "RefusionCompression", "LatentRefusion")]
                        + ["DACLIP = osir.methods.daclip.method", "DACLIPUIR = osir.methods.daclip.method"]
                        + ["SpandrelModel = osir.methods.spandrel.method", "ZeroShot = osir.methods.zeroshot.method"],
        "osir.archs": ["ConditionalUNet = osir.methods.irsde.arch", "RRDBNet = osir.methods.realesrgan.method",
                       "UNetDiscriminatorSN = osir.methods.realesrgan.method",
                       "ConditionalNAFNet = osir.methods.refusion.arch", "CompressionUNet = osir.methods.refusion.arch",
                       "DACLIPUNet = osir.methods.daclip.unet", "ADMUNet = osir.methods.zeroshot.adm"],
        "osir.datasets": [f"{name} = osir.data.datasets" for name in
                          ("PairedImageDataset", "SyntheticPairDataset", "SingleImageDataset")]
                         + ["BokehPairDataset = osir.methods.refusion.bokeh_data",
                            "DegradationTypeDataset = osir.methods.daclip.data"],
        "osir.losses": ["SpatialEntropyLoss = osir.methods.refusion.spatial_entropy"],
        "osir.degradations": [f"{name} = osir.degradations.simple" for name in
                              ("GaussianNoise", "RandomMask", "BicubicDownscale", "JPEGCompression", "GaussianBlur",
                               "LowLight", "Haze")]
                             + ["ZeroShotMeasurement = osir.methods.zeroshot.measurement"],
        "osir.batch_degradations": ["RealESRGANDegradation = osir.degradations.realesrgan",
                                     "WildDegradation = osir.degradations.wild"],
        "osir.metrics": [f"{name} = osir.metrics.suite" for name in ("psnr", "ssim", "lpips", "dists", "musiq", "maniqa",
                                                                    "clipiqa", "pyiqa", "niqe")] + ["fid = osir.metrics.fid"],
        "osir.cards": [f"{name} = osir.methods.{name}.card" for name in
                       ("daclip", "irsde", "osediff", "realesrgan", "refusion", "spandrel", "zeroshot")],
        "osir.samplers": [f"{name} = osir.diffusion.samplers" for name in ("sde", "ode", "posterior")]
                         + [f"{name} = osir.diffusion.solvers" for name in
                            ("ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "deis", "heun")],
        "osir.zeroshot_samplers": [f"{name} = osir.methods.zeroshot.svd_samplers" for name in ("ddrm", "ddnm")]
                                  + [f"{name} = osir.methods.zeroshot.guidance_samplers"
                                     for name in ("dps", "pigdm", "diffpir")] + ["tds = osir.methods.zeroshot.smc"],
        "osir.optimizers": [f"{name} = osir.engine.optim" for name in ("Adam", "AdamW", "Lion")],
        "osir.prompts": [f"{name} = osir.data.prompts" for name in ("EmptyPrompt", "FixedPrompt", "TextFilePrompt",
                                                                          "CaptionPrompt")]
                        + [f"{name} = osir.methods.osediff.dape" for name in ("dape", "ram")],
        # the files each registered class reads, declared without torch for the preflight (osir.core.files)
        "osir.files": [f"{name} = osir.data.files" for name in
                       ("PairedImageDataset", "SyntheticPairDataset", "SingleImageDataset", "CaptionPrompt",
                        "TextFilePrompt")]
                      + ["SpandrelModel = osir.methods.spandrel.files"]
                      + [f"{name} = osir.methods.daclip.files" for name in ("DACLIP", "DACLIPUIR", "DegradationTypeDataset")]
                      + [f"{name} = osir.methods.osediff.files" for name in ("OSEDiff", "dape", "ram")]
                      + [f"{name} = osir.methods.refusion.files" for name in ("LatentRefusion", "BokehPairDataset")]
                      + ["RealESRGAN = osir.methods.realesrgan.files", "ZeroShot = osir.methods.zeroshot.files"]
                      + [f"{name} = osir.metrics.files" for name in
                         ("lpips", "dists", "clipiqa", "musiq", "maniqa", "pyiqa", "fid")],
        # where users get the public data sets the option files name (osir.data.sources), by method folder
        "osir.data_sources": [f"{name} = osir.methods.irsde.files" for name in ("Rain100H-train", "Rain100H-test",
                                                                                 "McMaster")]
                             + [f"{name} = osir.methods.refusion.files" for name in
                                ("NTIRE2023-dehazing", "NTIRE2023-shadow", "NTIRE2023-bokeh")]
                             + [f"{name} = osir.methods.daclip.files" for name in
                                ("DIV2K", "DF2K", "GoPro", "LOL", "CelebaHQ-256", "DA-CLIP-train", "DA-CLIP-val",
                                 "DA-CLIP-captions")]
                             + [f"{name} = osir.methods.osediff.files" for name in ("RealSR", "LSDIR")]
                             + ["DF2K_OST = osir.methods.realesrgan.files"],
        "osir.schedulers": [f"{name} = osir.engine.optim" for name in
                            ("MultiStepLR", "CosineAnnealingLR", "WarmupConstant", "WarmupCosine")],
    },
)

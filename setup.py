from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("osir/__init__.py").read_text(), version)

setup(
    name="osir",
    version=version["__version__"],
    description="Open-source image restoration: IR-SDE, Refusion, DA-CLIP, OSEDiff, Real-ESRGAN in one toolbox",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["osir", "osir.*"]),
    install_requires=[
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
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
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout"]},
    entry_points={"console_scripts": [
        "osir-train=osir.train:main",
        "osir-test=osir.test:main",
        "osir-score=osir.metrics.__main__:main",
    ]},
)

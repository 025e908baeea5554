"""The files the registered metrics read (``osir.core.files``), declared without torch or pyiqa.  A metric
whose files are missing is skipped with a warning (the suite's options are ``component(METRICS,
optional=True)``), so the preflight names them as optional.

Each file is named with the URL pyiqa, torchvision or OpenAI's CLIP would download it from (nothing is
downloaded: the user fetches it and gives the path or a ``weights_dir``).  The URLs are facts of those libraries
(pyiqa's ``default_model_urls``, ``FID_WEIGHTS_URL`` and ``clip_model._MODELS``, read from pyiqa 0.1.16;
torchvision's weights enums), copied here so that a missing file is named without importing them;
``tests/test_preflight.py`` checks every entry against the installed libraries.
"""
from __future__ import annotations

from osir.core.files import DeclaredFiles, NeededFile, PathOption, file_option, folder_option
from osir.core.registry import FILES

_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_TORCHVISION = "https://download.pytorch.org/models/"
_CLIP = "https://openaipublic.azureedge.net/clip/models/"

#: torchvision's ImageNet backbones (LPIPS, DISTS)
BACKBONE_URLS = {"alex": _TORCHVISION + "alexnet-owt-7be5be79.pth", "vgg": _TORCHVISION + "vgg16-397923af.pth"}
#: OpenAI's CLIP files, TorchScript (CLIP-IQA's backbones)
CLIP_URLS = {"RN50": _CLIP + "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
             "ViT-L/14": _CLIP + "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"}
#: pyiqa's checkpoints, by osir's metric settings
LPIPS_URLS = {("0.1", "alex"): "LPIPS_v0.1_alex-df73285e.pth", ("0.1", "vgg"): "LPIPS_v0.1_vgg-a78928a0.pth",
              ("0.0", "alex"): "LPIPS_v0.0_alex-18720f55.pth", ("0.0", "vgg"): "LPIPS_v0.0_vgg-b9e42362.pth"}
DISTS_URL = _PYIQA + "DISTS_weights-f5e65c96.pth"
MUSIQ_URLS = {"koniq": "musiq_koniq_ckpt-e95806b9.pth", "spaq": "musiq_spaq_ckpt-358bb6af.pth",
              "ava": "musiq_ava_ckpt-e8d3f067.pth", "paq2piq": "musiq_paq2piq_ckpt-364c0c84.pth"}
MANIQA_URLS = {"koniq": "ckpt_koniq10k.pt", "kadid": "ckpt_kadid10k.pt", "pipal": "MANIQA_PIPAL-ae6d356b.pth"}
CLIPIQA_URLS = {"clipiqa+": "CLIP-IQA%2B_learned_prompts-603f3273.pth",
                "clipiqa+_rn50_512": "CLIPIQA%2B_RN50_512-89f5d940.pth",
                "clipiqa+_vitL14_512": "CLIPIQA%2B_ViTL14_512-e66488f2.pth"}
CLIPIQA_BACKBONES = {"clipiqa": "RN50", "clipiqa+": "RN50", "clipiqa+_rn50_512": "RN50",
                     "clipiqa+_vitL14_512": "ViT-L/14"}
FID_URL = _PYIQA + "pt_inception-2015-12-05-6726825d.pth"


def download_urls(metric: str, spec: dict) -> dict[str, str]:
    """{path option: the URL its file is downloaded from} for a metric's settings (``spec``, as written: the
    defaults are the metric classes' own); an unknown setting gives no URL (validation names it)."""
    def pyiqa(table, key):
        return {} if table.get(key) is None else {"pretrained_model_path": _PYIQA + table[key]}
    if metric == "lpips":
        net = spec.get("net", "alex")
        return {**pyiqa(LPIPS_URLS, (str(spec.get("version", "0.1")), net)),
                **({"backbone_path": BACKBONE_URLS[net]} if net in BACKBONE_URLS else {})}
    if metric == "dists":
        return {"pretrained_model_path": DISTS_URL, "backbone_path": BACKBONE_URLS["vgg"]}
    if metric == "musiq":
        return pyiqa(MUSIQ_URLS, spec.get("variant", "koniq"))
    if metric == "maniqa":
        return pyiqa(MANIQA_URLS, spec.get("variant", "koniq"))
    if metric == "clipiqa":
        variant = spec.get("variant", "clipiqa")
        backbone = CLIPIQA_BACKBONES.get(variant)
        return {**pyiqa(CLIPIQA_URLS, variant), **({"backbone_path": CLIP_URLS[backbone]} if backbone else {})}
    if metric == "fid":
        return {"pretrained_model_path": FID_URL}
    return {}


WHAT = {"pretrained_model_path": "the metric's weights", "backbone_path": "the metric's backbone weights"}


def _marker(option: str, url: str | None) -> PathOption:
    if url is None:
        return file_option(WHAT[option] + " (pyiqa's file, under its download name)")
    from urllib.parse import unquote
    return file_option(WHAT[option], unquote(url.rsplit("/", 1)[-1]), url)


def weight_files(metric: str, paths: tuple[str, ...]):
    """The ``depends`` of a metric: its weight files, each with the name and URL its library downloads it
    under for the metric's settings."""
    def files(spec: dict, key: str) -> list[NeededFile]:
        urls = download_urls(metric, spec)
        found = [NeededFile.at(f"{key}.{option}", spec[option], _marker(option, urls.get(option)))
                 for option in paths if isinstance(spec.get(option), str)]
        if isinstance(spec.get("weights_dir"), str):
            names = [_marker(option, url).published for option, url in urls.items() if spec.get(option) is None]
            held = f" ({', '.join(repr(n) for n in names)})" if names else ""
            found.append(NeededFile.at(f"{key}.weights_dir", spec["weights_dir"], folder_option(
                f"a folder of metric weights under their download names{held}")))
        return found
    return files


#: metric -> its weight-file arguments (each metric also takes ``weights_dir``)
METRIC_PATHS = {"lpips": ("pretrained_model_path", "backbone_path"),
                "dists": ("pretrained_model_path", "backbone_path"),
                "clipiqa": ("pretrained_model_path", "backbone_path"),
                "musiq": ("pretrained_model_path",),
                "maniqa": ("pretrained_model_path",),
                "pyiqa": ("pretrained_model_path",),
                "fid": ("pretrained_model_path",)}

for _name, _paths in METRIC_PATHS.items():
    FILES.register(DeclaredFiles(depends=weight_files(_name, _paths)), name=_name)

"""No metric weights file runs pickled code (issue 23, point 1).

For every file option of every learned metric (``pretrained_model_path``, ``backbone_path``, and the
files found through ``weights_dir``), a ``.pth`` is planted whose pickle calls ``open(marker, 'w')``
when unpickled with ``weights_only=False`` (what pyiqa, torchvision's hub loader and osir's metric
suite did).  The other files the metric needs are valid (random weights in the real layout), so the
planted file is the one read.  Building the suite must refuse it with one ``CheckpointError`` line
naming the file, and the marker must not exist.  A TorchScript archive (OpenAI CLIP's format) with
such a pickle inside is refused too.
"""
import io
import os
import zipfile

import pytest
import torch

from osir.core.checkpoint import CheckpointError
from osir.core.weights import weights_only_loads
from osir.metrics.suite import MetricSuite

MARKER = "pickled_code_ran"


class _Payload:
    """Unpickled with weights_only=False, this calls ``open(marker, 'w')``: the file appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker, **tensors):
    """A torch file shaped like a state dict, one of whose values is ``_Payload``."""
    torch.save({**tensors, "extra": _Payload(marker)}, path)
    return path


def _small_torchvision(arch: str, path):
    """torchvision's ``arch`` in its real keys and shapes: random features, the classifier (unused
    by LPIPS/DISTS) one broadcast value per tensor so the file stays small."""
    import torchvision
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)()
    state = {k: (torch.randn_like(v) * 0.05 if k.startswith("features") else torch.zeros(1).expand(v.shape))
             for k, v in net.state_dict().items()}
    torch.save(state, path)
    return path


def _tiny_torchscript(path):
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    return path


def _torchscript_with_payload(path, marker):
    """A TorchScript archive whose ``data.pkl`` is a pickle calling ``open(marker, 'w')``."""
    import pickle
    source = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Identity()), source)
    with zipfile.ZipFile(io.BytesIO(source.getvalue())) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, pickle.dumps(_Payload(marker), protocol=2) if name.endswith("/data.pkl") else data)
    return path


def _dists_weights(path):
    channels = 3 + 64 + 128 + 256 + 512 + 512
    torch.save({"alpha": torch.full((1, channels, 1, 1), 0.1), "beta": torch.full((1, channels, 1, 1), 0.1)}, path)
    return path


# (id, builder(tmp, marker) -> (metrics section, weights_dir or None, the planted file))
def _lpips_head_given(t, m):
    evil = plant(t / "lpips.pth", m)
    return {"type": "lpips", "pretrained_model_path": str(evil),
            "backbone_path": str(_small_torchvision("alexnet", t / "alex.pth"))}, None, evil


def _lpips_backbone_given(t, m):
    evil = plant(t / "alex.pth", m)
    return {"type": "lpips", "pretrained_model_path": str(t / "head.pth"), "backbone_path": str(evil)}, None, evil


def _lpips_head_in_weights_dir(t, m):
    _small_torchvision("alexnet", t / "alexnet-owt-7be5be79.pth")
    return {"type": "lpips"}, t, plant(t / "LPIPS_v0.1_alex-df73285e.pth", m)


def _dists_head(t, m):
    evil = plant(t / "dists.pth", m, alpha=torch.zeros(1))
    return {"type": "dists", "pretrained_model_path": str(evil), "backbone_path": str(t / "vgg.pth")}, None, evil


def _dists_backbone_in_weights_dir(t, m):
    _dists_weights(t / "DISTS_weights-f5e65c96.pth")
    return {"type": "dists"}, t, plant(t / "checkpoints" / "vgg16-397923af.pth", m)


def _musiq(t, m):
    evil = plant(t / "musiq.pth", m)
    return {"type": "musiq", "pretrained_model_path": str(evil)}, None, evil


def _maniqa(t, m):
    evil = plant(t / "maniqa.pth", m)
    return {"type": "maniqa", "pretrained_model_path": str(evil)}, None, evil


def _clipiqa_backbone(t, m):
    evil = _torchscript_with_payload(t / "RN50.pt", m)
    return {"type": "clipiqa", "backbone_path": str(evil)}, None, evil


def _clipiqa_plus_prompts(t, m):
    evil = plant(t / "prompts.pth", m)
    return {"type": "clipiqa", "variant": "clipiqa+", "backbone_path": str(_tiny_torchscript(t / "RN50.pt")),
            "pretrained_model_path": str(evil)}, None, evil


def _clipiqa_plus_512_in_weights_dir(t, m):
    _tiny_torchscript(t / "RN50.pt")
    evil = plant(t / "pyiqa" / "CLIPIQA+_RN50_512-89f5d940.pth", m)
    return {"type": "clipiqa", "variant": "clipiqa+_rn50_512"}, t, evil


def _fid(t, m):
    evil = plant(t / "inception.pth", m)
    return {"type": "fid", "pretrained_model_path": str(evil), "cache": False}, None, evil


def _any_pyiqa_given(t, m):
    evil = plant(t / "svm.pth", m)
    return {"type": "pyiqa", "metric": "brisque", "pretrained_model_path": str(evil)}, None, evil


def _any_pyiqa_in_weights_dir(t, m):
    return {"type": "pyiqa", "metric": "brisque"}, t, plant(t / "brisque_svm_weights.pth", m)


CASES = [
    ("lpips pretrained_model_path", _lpips_head_given),
    ("lpips backbone_path", _lpips_backbone_given),
    ("lpips head in weights_dir", _lpips_head_in_weights_dir),
    ("dists pretrained_model_path", _dists_head),
    ("dists backbone in weights_dir", _dists_backbone_in_weights_dir),
    ("musiq pretrained_model_path", _musiq),
    ("maniqa pretrained_model_path", _maniqa),
    ("clipiqa backbone_path (TorchScript)", _clipiqa_backbone),
    ("clipiqa+ pretrained_model_path", _clipiqa_plus_prompts),
    ("clipiqa+_rn50_512 in weights_dir", _clipiqa_plus_512_in_weights_dir),
    ("fid pretrained_model_path", _fid),
    ("pyiqa brisque pretrained_model_path", _any_pyiqa_given),
    ("pyiqa brisque in weights_dir", _any_pyiqa_in_weights_dir),
]


@pytest.mark.parametrize("case, build", CASES, ids=[c[0] for c in CASES])
def test_a_metric_file_with_pickled_code_is_refused_and_nothing_runs(tmp_path, case, build):
    marker = tmp_path / MARKER
    folder = tmp_path / "w"
    (folder / "pyiqa").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    torch.save({}, folder / "head.pth")
    torch.save({}, folder / "vgg.pth")
    spec, weights_dir, evil = build(folder, marker)
    with pytest.raises(CheckpointError) as caught:
        MetricSuite({"m": spec}, weights_dir=None if weights_dir is None else str(weights_dir), strict=True)
    message = str(caught.value)
    assert not marker.exists(), f"{case}: the planted pickle ran"
    assert "\n" not in message and f"'{evil}'" in message, message
    if "TorchScript" in case:        # torch.jit.load's unpickler knows no Python callables
        assert "as a TorchScript archive (OpenAI CLIP's format): Unknown type name 'io.open'" in message, message
    else:
        assert "not a weights-only file (it would call io.open); osir runs no pickled code" in message, message


def test_weights_only_loads_forces_library_loads_and_is_undone(tmp_path):
    """Inside the block a library's explicit ``weights_only=False`` reads weights only and a refusal
    names the file; after it, torch.load and the environment are as before."""
    marker = tmp_path / MARKER
    evil = plant(tmp_path / "evil.pth", marker)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0)}, good)
    before = torch.load
    with weights_only_loads(), weights_only_loads():      # nested blocks
        assert torch.equal(torch.load(good, weights_only=False)["w"], torch.arange(3.0))
        with pytest.raises(CheckpointError, match=r"refused '.*evil\.pth': not a weights-only file \(it would call "):
            torch.load(evil, weights_only=False)
        with open(evil, "rb") as f, pytest.raises(CheckpointError, match=r"refused '.*evil\.pth'"):
            torch.load(f, map_location="cpu", weights_only=False)
        (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)     # corrupt: one line, no advice
        with pytest.raises(CheckpointError, match=r"^cannot read '.*garbage\.pth' as a weights-only torch file: "
                                                  r"Unsupported operand 0$"):
            torch.load(tmp_path / "garbage.pth")
    assert torch.load is before and not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ

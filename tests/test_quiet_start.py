"""Quiet start (issue 27, point 3): the known harmless third-party messages are hidden when a command starts
(``osir.core.quiet``), osir's own lines and any other message of the same libraries still show, the DA-CLIP
paths check their files before building a CLIP, and the two fast paths (``osir --help``, ``osir restore
--list-models``) are measured in a fresh interpreter: module counts and seconds, recorded, not asserted."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_images

REPO = Path(__file__).resolve().parents[1]

#: the messages the issue reports, as the libraries print them (reproduced here; see osir.core.quiet.KNOWN)
BITSANDBYTES = "Failed to load CPU gemm_4bit_forward from kernels-community"
PEFT = "Already found a `peft_config` attribute in the model. This will lead to having multiple adapters"
TRANSFORMERS_IDS = "_token_id must be `None` or an integer within the vocabulary"
OPEN_CLIP = "Model initialized randomly."


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}   # no -W: the command's own choice
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _python(*args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=_env(**env),
                          timeout=timeout, check=False)


# ----------------------------------------------------------------------------- a command's stderr
def test_a_tiny_osediff_restore_shows_osirs_lines_and_none_of_the_known_messages(tmp_path):
    """``osir restore`` with options/osediff_tiny.yml (the tiny SD built on first use, then two LoRA adapter
    sets injected): before, bitsandbytes' kernel message (on a CPU with AVX512-BF16), the transformers
    bos/eos token-id warnings (the tiny text encoder's config) and peft's multiple-adapters warning."""
    write_images(tmp_path / "in", 1, (16, 16))
    done = _python("-m", "osir", "restore", "--options", "options/osediff_tiny.yml", "--set",
                   f"method.sd_path={tmp_path / 'sd21_tiny'}", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    for message in (BITSANDBYTES, PEFT, TRANSFORMERS_IDS):
        assert message not in done.stderr, done.stderr
    assert "OSEDiff: VSD off (method.vsd_weight 0)" in done.stderr      # osir's own warning line stays
    assert "1 images restored" in done.stdout and (tmp_path / "out" / "img0.png").is_file()


UNKNOWN = """
import logging, sys
from torch import nn
from osir.core import quiet
if sys.argv[1] == "install":
    quiet.install()
import bitsandbytes                            # may log the known kernel message while being imported
from osir.methods.osediff.lora import add_lora
model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
add_lora(model, {"first": ["0"], "second": ["1"]})      # the second adapter: peft's known warning
model[0].merge()
model[0].merge()                                         # peft, same module: "All adapters are already merged"
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another bitsandbytes message")
# the known message as bitsandbytes logs it (on a CPU with AVX512-BF16 only, so logged here on every CPU)
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: no network access")
"""


def test_other_messages_of_the_same_libraries_still_show_and_warning_options_show_everything():
    """Filtered by library and exact message: peft's "already merged" warning (raised by the module that
    raises the hidden one) and another record on bitsandbytes' logger still show.  With PYTHONWARNINGS set
    nothing is hidden (the user asked for warnings)."""
    quiet = _python("-c", UNKNOWN, "install")
    assert quiet.returncode == 0, quiet.stderr
    assert PEFT not in quiet.stderr and BITSANDBYTES not in quiet.stderr
    assert "All adapters are already merged, nothing to do." in quiet.stderr
    assert "another bitsandbytes message" in quiet.stderr
    loud = _python("-c", UNKNOWN, "install", PYTHONWARNINGS="default")
    assert PEFT in loud.stderr and "All adapters are already merged" in loud.stderr
    bare = _python("-c", UNKNOWN, "no")            # the same process without install(): the baseline
    assert PEFT in bare.stderr and BITSANDBYTES in bare.stderr


def test_importing_osir_installs_nothing_and_install_is_idempotent():
    """No import-time side effect: importing the quiet module and the command layer leaves the warning
    filters and the loggers alone; ``install`` twice adds each filter once."""
    code = ("import logging, warnings\n"
            "import osir, osir.core.quiet as q, osir.core.cli, osir.__main__\n"
            "ours = {k.message for k in q.KNOWN}\n"
            "def count():\n"
            "    return sum(1 for f in warnings.filters if f[1] is not None and f[1].pattern in ours)\n"
            "loggers = [logging.getLogger(), logging.getLogger('bitsandbytes.backends.cpu.ops')]\n"
            "print(count(), *(len(x.filters) for x in loggers))\n"
            "q.install(); q.install()\n"
            "print(count(), *(len(x.filters) for x in loggers))\n")
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    before, after = (line.split() for line in done.stdout.splitlines())
    assert before == ["0", "0", "0"]
    assert after == ["1", "0", "1"]      # peft's warning, bitsandbytes' logger; the root logger's (open_clip) is scoped


# ----------------------------------------------------------------------------- DA-CLIP files first
@pytest.mark.parametrize("options, release_file", [("daclip_uir.yml", "daclip_ViT-B-32.pt"),
                                                   ("wild_ir.yml", "wild-daclip_ViT-L-14.pt")])
def test_a_missing_daclip_file_fails_in_one_line_before_any_clip_or_network_is_built(tmp_path, options, release_file):
    """``osir restore --options`` (the options' data sets are not read there): before, the U-Net, then a random
    ViT-B/32 (ViT-L/14: 328 s on the reporter's CPU), then 'not found'.  Now one line naming the option, the
    file, the release's file name and page; open_clip and diffusers (the U-Net's attention) are never
    imported, so no model of theirs was built."""
    missing = tmp_path / "nowhere" / release_file
    probe = ("import sys\nfrom osir.__main__ import main\ncode = main(sys.argv[1:])\n"
             "print('imported:', 'open_clip' in sys.modules, 'diffusers' in sys.modules)\nsys.exit(code)")
    write_images(tmp_path / "in", 1, (16, 16))
    done = _python("-c", probe, "restore", "--options", f"options/{options}", "--set", f"method.daclip_path={missing}",
                   str(tmp_path / "in"), "-o", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]              # one line
    line = done.stderr.strip()
    assert line.startswith("osir restore: options error: ") and "method.daclip_path" in line and f"'{missing}'" in line
    assert f"'{release_file}'" in line and "huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde" in line
    assert done.stdout.strip() == "imported: False False"


@pytest.mark.parametrize("key", ["release_path", "clip_checkpoint"])
def test_stage1_daclip_checks_its_files_before_building_the_clip(tmp_path, key):
    from osir.core.registry import OptionsError
    from osir.methods.daclip.method import DACLIPMethod
    missing = tmp_path / "missing.pt"
    with pytest.raises(OptionsError, match=f"^method.{key}: '{missing}' does not exist; it should be ") as err:
        DACLIPMethod(clip_model="ViT-B-32", **{key: str(missing)})
    if key == "release_path":
        assert "('daclip_ViT-B-32.pt', from huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde" in str(err.value)


TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_open_clip_random_init_is_hidden_only_where_the_daclip_file_is_loaded_over_it(tmp_path, caplog):
    """open_clip's "No pretrained weights loaded ... initialized randomly" (logged on the root logger) still
    shows for a stage-1 DA-CLIP on a CLIP without weights; universal IR with its DA-CLIP file builds the same
    named CLIP without it, loads the file (the tensors are the file's) and leaves no filter behind."""
    import open_clip

    from osir.methods.daclip.method import DACLIPMethod, DACLIPUniversalIR
    name = "osir-quiet-tiny"
    (tmp_path / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / f"{name}.json")     # a named model, built by open_clip.create_model
    caplog.set_level(logging.WARNING)
    torch.manual_seed(0)
    stage1 = DACLIPMethod(clip_model=name)
    assert [r.getMessage() for r in caplog.records if OPEN_CLIP in r.getMessage()] == [
        f"No pretrained weights loaded for model '{name}'. Model initialized randomly."]
    saved = stage1.networks["daclip"].state_dict()
    torch.save(saved, tmp_path / "daclip_tiny.pt")
    caplog.clear()
    torch.manual_seed(1)
    uir = DACLIPUniversalIR(network={"type": "DACLIPUNet", "nf": 8, "ch_mult": [1, 2], "use_degra_context": False,
                                     "use_image_context": False},
                            T=4, clip_model=name, daclip_path=str(tmp_path / "daclip_tiny.pt"))
    assert not [r for r in caplog.records if OPEN_CLIP in r.getMessage()]
    loaded = uir.networks["daclip"].state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert logging.getLogger().filters == []


# ----------------------------------------------------------------------------- the fast paths, measured
PROBE = """
import json, sys, time
start = time.perf_counter()
from osir.__main__ import main
code = main(sys.argv[2:])
json.dump({"code": code, "modules": len(sys.modules), "seconds": time.perf_counter() - start,
           **{m: m in sys.modules for m in ("torch", "numpy", "diffusers", "open_clip", "peft")}},
          open(sys.argv[1], "w"))
"""


def _measure(tmp_path, *argv) -> dict:
    report = tmp_path / "probe.json"
    start = time.perf_counter()
    done = _python("-c", PROBE, str(report), *argv, timeout=120)
    assert done.returncode == 0, done.stderr
    numbers = json.loads(report.read_text())
    numbers["process_seconds"] = time.perf_counter() - start     # interpreter start included
    numbers["stdout"] = done.stdout
    return numbers


def _record(record_property, label: str, numbers: dict) -> None:
    for key in ("modules", "seconds", "process_seconds"):
        record_property(key, numbers[key])
    print(f"{label}: {numbers['modules']} modules, {numbers['seconds']:.2f} s in main, "
          f"{numbers['process_seconds']:.2f} s process")


def test_osir_help_imports_no_torch(tmp_path, record_property):
    numbers = _measure(tmp_path, "--help")
    _record(record_property, "osir --help", numbers)
    assert numbers["code"] == 0 and "osir <command> --help" in numbers["stdout"]
    assert not numbers["torch"] and not numbers["numpy"]


@pytest.fixture(scope="module")
def list_models(tmp_path_factory) -> dict:
    return _measure(tmp_path_factory.mktemp("list"), "restore", "--list-models")


def test_restore_list_models_imports_no_model_library(list_models, record_property):
    _record(record_property, "osir restore --list-models", list_models)
    assert list_models["code"] == 0 and "daclip-uir" in list_models["stdout"] and "wild-ir" in list_models["stdout"]
    assert not (list_models["diffusers"] or list_models["open_clip"] or list_models["peft"])


def test_restore_list_models_imports_no_torch(list_models):
    assert not list_models["torch"]


def test_a_missing_restore_input_is_reported_without_importing_torch(tmp_path):
    """A path error of ``osir restore`` comes before any model library is imported (issue 27 point 3)."""
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom osir.__main__ import main\ncode = main(sys.argv[1:])\n"
                           "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)",
                           "restore", str(tmp_path / "nope.png"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, env=_env(), check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"osir restore: error: input not found: '{tmp_path / 'nope.png'}'"
    assert "torch imported: False" in done.stdout


def _restore_error(tmp_path, *extra) -> subprocess.CompletedProcess:
    image = tmp_path / "in.png"
    image.write_bytes(b"")          # only its name is checked before the weights
    return subprocess.run([sys.executable, "-c", "import sys\nfrom osir.__main__ import main\ncode = main(sys.argv[1:])\n"
                           "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)",
                           "restore", str(image), "-o", str(tmp_path / "out"), *extra],
                          capture_output=True, text=True, cwd=REPO, env=_env(), check=False)


def test_a_model_without_weights_names_the_release_file_without_importing_torch(tmp_path):
    """``--model realesrgan-x4`` alone names the file the authors publish and its page (issue 27's example),
    before torch is imported."""
    done = _restore_error(tmp_path, "--model", "realesrgan-x4")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("osir restore: options error: --weights: give the weights file of 'realesrgan-x4': "
                                   "the Real-ESRGAN x4 generator ('RealESRGAN_x4plus.pth', from "
                                   "github.com/xinntao/Real-ESRGAN/releases)")
    assert "torch imported: False" in done.stdout


def test_a_missing_weights_file_and_an_unknown_model_are_reported_without_importing_torch(tmp_path):
    absent = tmp_path / "RealESRGAN_x4plus.pth"
    done = _restore_error(tmp_path, "--model", "realesrgan-x4", "--weights", str(absent))
    assert done.returncode == 2 and "torch imported: False" in done.stdout
    assert done.stderr.strip().startswith(f"osir restore: error: weights file not found: '{absent}' ('realesrgan-x4' "
                                          "restores with the Real-ESRGAN x4 generator ('RealESRGAN_x4plus.pth'")
    done = _restore_error(tmp_path, "--model", "realesrgan", "--weights", str(absent))
    assert done.returncode == 2 and "torch imported: False" in done.stdout
    assert "--model: unknown model 'realesrgan' (did you mean 'realesrgan-x4'?)" in done.stderr


COMMAND_PROBE = """
import json, sys, time
start = time.perf_counter()
from osir.{command} import main
code = main(sys.argv[2:])
json.dump({{"code": code, "modules": len(sys.modules), "seconds": time.perf_counter() - start,
           **{{m: m in sys.modules for m in ("torch", "torchvision", "basicsr", "accelerate", "diffusers", "open_clip")}}}},
          open(sys.argv[1], "w"))
"""


@pytest.mark.parametrize("command, options", [("train", "irsde.yml"), ("train", "osediff.yml"),
                                              ("train", "wild_ir.yml"), ("train", "realesrgan.yml"),
                                              ("test", "test/osediff.yml"), ("test", "test/daclip_uir.yml")])
def test_path_errors_of_train_and_test_come_before_torch_is_imported(tmp_path, command, options, record_property):
    """``osir/train.py`` and ``osir/test.py`` check the files on the options as read (``check_files_early``: the
    registered classes' files are declared in light modules), so a path error imports neither torch nor the
    trainer (accelerate), basicsr/torchvision or the model libraries.  Seconds are measured and printed, not
    asserted (the README's first-contact table); before this, torch's import alone made them 2.1-2.9 s."""
    report = tmp_path / "probe.json"
    start = time.perf_counter()
    done = _python("-c", COMMAND_PROBE.format(command=command), str(report), "-opt", str(REPO / "options" / options),
                   timeout=120)
    numbers = json.loads(report.read_text())
    numbers["process_seconds"] = time.perf_counter() - start
    _record(record_property, f"osir/{command}.py -opt options/{options} (nothing present)", numbers)
    assert numbers["code"] == 2 and "the options name are missing" in done.stderr
    assert not numbers["torch"], numbers
    assert not any(numbers[m] for m in ("torchvision", "basicsr", "accelerate", "diffusers", "open_clip")), numbers


def test_osir_metrics_names_every_missing_path_before_torch_or_pyiqa_is_imported(tmp_path, record_property):
    """``python -m osir.metrics``: the folders and ``-opt`` file of its arguments and the metric files the options
    name, all in one line, before the suite's imports (it printed only the first, after 4.8 s of pyiqa)."""
    report = tmp_path / "probe.json"
    start = time.perf_counter()
    done = _python("-c", COMMAND_PROBE.format(command="metrics.__main__"), str(report), "--restored",
                   str(tmp_path / "restored"), "--gt", str(tmp_path / "gt"), "-opt",
                   str(REPO / "options" / "test" / "daclip_uir.yml"), timeout=120)
    numbers = json.loads(report.read_text())
    numbers["process_seconds"] = time.perf_counter() - start
    _record(record_property, "python -m osir.metrics (nothing present)", numbers)
    assert numbers["code"] == 2 and not numbers["torch"]
    line = done.stderr.strip()
    assert line.startswith("osir.metrics: options error: 4 files or folders the arguments name are missing: ")
    assert all(k in line for k in ("--restored: folder", "--gt: folder", "metrics.lpips.pretrained_model_path",
                                   "metrics.lpips.backbone_path"))


def test_bench_steps_names_every_missing_file_before_torch_is_imported(tmp_path, record_property):
    """``osir.bench steps``: the options' files are checked as train.py and test.py check them (torch is
    imported on first use, after the check)."""
    report = tmp_path / "probe.json"
    start = time.perf_counter()
    done = _python("-c", COMMAND_PROBE.format(command="bench"), str(report), "steps", "-opt",
                   str(REPO / "options" / "test" / "irsde.yml"), timeout=120)
    numbers = json.loads(report.read_text())
    numbers["process_seconds"] = time.perf_counter() - start
    _record(record_property, "python -m osir.bench steps -opt options/test/irsde.yml (nothing present)", numbers)
    assert numbers["code"] == 2 and not numbers["torch"], numbers
    assert "3 files or folders the options name are missing: datasets.Rain100H.dataroot_gt" in done.stderr

"""``osir restore``: folders (nested, non-image, corrupt, grey, RGBA, 16-bit), pixels against the network's own
output, refusal to overwrite inputs, diffusion steps / seeds, precision, presets against their options files."""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from osir.core.checkpoint import save_network
from osir.restore import PRESETS, available_models, load_restorer, main

REPO = Path(__file__).resolve().parents[1]


def _rrdbnet(scale=4, seed=0):
    from osir.methods.realesrgan import RRDBNet
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=scale).eval()
    with torch.no_grad():      # outputs spread over (0.3, 0.9) instead of all below 0 (clamped to black)
        net.conv_last.weight.mul_(4)
        net.conv_last.bias.add_(0.6)
    return net


@pytest.fixture(scope="module")
def rrdb(tmp_path_factory):
    """A tiny random RRDBNet x4 saved as osir safetensors; (file, network)."""
    folder = tmp_path_factory.mktemp("rrdb")
    net = _rrdbnet()
    save_network(net, folder / "net_g.safetensors")
    return folder / "net_g.safetensors", net


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """A tiny random IR-SDE ConditionalUNet saved as osir safetensors."""
    from osir.methods.irsde import ConditionalUNet
    folder = tmp_path_factory.mktemp("unet")
    torch.manual_seed(0)
    save_network(ConditionalUNet(nf=4, depth=2), folder / "net_g.safetensors")
    return folder / "net_g.safetensors"


def _smooth(rng, h, w, c=3):
    small = rng.integers(0, 256, (max(h // 4, 2), max(w // 4, 2), c)).astype(np.uint8)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out if c > 1 else out[:, :, None] if out.ndim == 2 else out


def _tree(root: Path) -> Path:
    """in/a.png (RGB, odd size), in/sub/deeper/b.jpg, in/sub/grey.png, in/rgba.png, in/deep16.png (16-bit),
    in/notes.txt, in/sub/bad.png (corrupt)."""
    rng = np.random.default_rng(0)
    src = root / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(src / "a.png"), _smooth(rng, 13, 11))
    cv2.imwrite(str(src / "sub" / "deeper" / "b.jpg"), _smooth(rng, 12, 12))
    cv2.imwrite(str(src / "sub" / "grey.png"), cv2.cvtColor(_smooth(rng, 10, 9), cv2.COLOR_BGR2GRAY))
    rgba = np.dstack([_smooth(rng, 9, 10), rng.integers(0, 256, (9, 10)).astype(np.uint8)])
    cv2.imwrite(str(src / "rgba.png"), rgba)
    deep = rng.integers(0, 65536, (3, 3, 3)).astype(np.float32)
    cv2.imwrite(str(src / "deep16.png"), cv2.resize(deep, (8, 11), interpolation=cv2.INTER_CUBIC).clip(0, 65535)
                .astype(np.uint16))
    (src / "notes.txt").write_text("not an image")
    (src / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return src


def _net_output(net, bgr: np.ndarray, top: float) -> np.ndarray:
    """The network's own output for an OpenCV image (HxWx3 BGR or HxW grey), as float RGB."""
    rgb = np.repeat(bgr[:, :, None], 3, 2) if bgr.ndim == 2 else bgr[:, :, 2::-1]
    x = torch.from_numpy(np.ascontiguousarray(rgb.astype(np.float32).transpose(2, 0, 1)) / top)[None]
    with torch.no_grad():
        return net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()


def _quantise(x: np.ndarray, top: float) -> np.ndarray:
    return (np.clip(x, 0, 1) * top).round()


def test_folder_outputs_pixels_notes_and_exit_code(tmp_path, rrdb, capsys):
    weights, net = rrdb
    src, out = _tree(tmp_path), tmp_path / "out"
    rc = main(["--model", "realesrgan-x4", "--weights", str(weights), str(src), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 1                                   # one corrupt image: the run goes on, exit code 1 at the end
    assert f"error: cannot decode image '{src / 'sub' / 'bad.png'}' (corrupt or not an image); skipped" in captured.err
    assert f"note: skipped '{src / 'notes.txt'}' (not an image: .txt)" in captured.err
    summary = [line for line in captured.out.splitlines() if line.startswith("osir restore:")]
    assert len(summary) == 1 and re.fullmatch(
        r"osir restore: 5 images restored, 1 failed, 1 skipped \(not images\) in \d+\.\d\d s \((\d+\.\d\d images/s|\d+\.\d s/image); "
        rf"model loaded in \d+\.\d\d s\) with realesrgan-x4 -> {re.escape(str(out))}", summary[0])
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "deep16.png", "rgba.png", "sub/deeper/b.png", "sub/grey.png"]

    # RGB, 8-bit: exactly the network's output, rounded to 8 bits
    a_in = cv2.imread(str(src / "a.png"))
    a_out = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert a_out.shape == (52, 44, 3)
    assert np.array_equal(a_out[:, :, ::-1], _quantise(_net_output(net, a_in, 255), 255))
    jpg_out = cv2.imread(str(out / "sub" / "deeper" / "b.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(jpg_out[:, :, ::-1], _quantise(_net_output(net, cv2.imread(str(src / "sub/deeper/b.jpg")), 255), 255))
    # grey in -> grey out (BT.601 luma of the restored RGB)
    g_in = cv2.imread(str(src / "sub" / "grey.png"), cv2.IMREAD_UNCHANGED)
    g_out = cv2.imread(str(out / "sub" / "grey.png"), cv2.IMREAD_UNCHANGED)
    assert g_in.ndim == 2 and g_out.shape == (40, 36) and g_out.dtype == np.uint8
    expected = _quantise(cv2.cvtColor(_net_output(net, g_in, 255), cv2.COLOR_RGB2GRAY), 255)
    assert np.abs(g_out.astype(int) - expected).max() <= 1 and np.mean(g_out == expected) > 0.99
    # RGBA: colour restored from the RGB channels, alpha kept and resized (bilinear) to the output size
    r_in = cv2.imread(str(src / "rgba.png"), cv2.IMREAD_UNCHANGED)
    r_out = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert r_out.shape == (36, 40, 4)
    assert np.array_equal(r_out[:, :, 2::-1], _quantise(_net_output(net, r_in[:, :, :3], 255), 255))
    alpha = cv2.resize(r_in[:, :, 3].astype(np.float32) / 255, (40, 36), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(r_out[:, :, 3], _quantise(alpha, 255))
    # 16-bit in -> restored from all 16 bits and written 16-bit
    d_in = cv2.imread(str(src / "deep16.png"), cv2.IMREAD_UNCHANGED)
    d_out = cv2.imread(str(out / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert d_in.dtype == np.uint16 and d_out.dtype == np.uint16 and d_out.shape == (44, 32, 3)
    expected = _quantise(_net_output(net, d_in, 65535), 65535)
    assert np.abs(d_out[:, :, ::-1].astype(np.int64) - expected).max() <= 1
    assert np.mean(d_out % 257 != 0) > 0.9           # not an 8-bit result scaled up


def test_batches_of_one_size_give_the_single_image_outputs(tmp_path, rrdb, capsys):
    weights, _ = rrdb
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), _smooth(rng, 12, 12))
    cv2.imwrite(str(src / "other.png"), _smooth(rng, 10, 14))
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(src), "-o", str(tmp_path / "one")]) == 0
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(src), "-o", str(tmp_path / "three"),
                 "--batch-size", "3", "--suffix", "_x4", "--ext", "jpg"]) == 0
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(src), "-o", str(tmp_path / "b3"),
                 "--batch-size", "3"]) == 0
    assert "4 images restored, 0 failed, 0 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == ["0_x4.jpg", "1_x4.jpg", "2_x4.jpg", "other_x4.jpg"]
    for name in ("0.png", "1.png", "2.png", "other.png"):
        one = cv2.imread(str(tmp_path / "one" / name)).astype(int)
        assert np.abs(one - cv2.imread(str(tmp_path / "b3" / name)).astype(int)).max() <= 1


def test_recognised_without_model_and_a_single_output_file(tmp_path, rrdb, capsys):
    weights, net = rrdb
    rng = np.random.default_rng(2)
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), _smooth(rng, 9, 7))
    assert main(["--weights", str(weights), str(photo), "-o", str(tmp_path / "restored.png")]) == 0
    err = capsys.readouterr().err
    assert f"recognised '{weights}' as RealESRGAN (RRDBNet" in err and "num_feat=8 num_block=1" in err
    out = cv2.imread(str(tmp_path / "restored.png"))
    assert np.array_equal(out[:, :, ::-1], _quantise(_net_output(net, cv2.imread(str(photo)), 255), 255))


def test_outputs_never_overwrite_inputs(tmp_path, rrdb, capsys):
    weights, _ = rrdb
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "a.png"), _smooth(rng, 8, 8))
    cv2.imwrite(str(src / "sub" / "b.png"), _smooth(rng, 8, 8))
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    args = ["--model", "realesrgan-x4", "--weights", str(weights)]
    assert main([*args, str(src), "-o", str(src)]) == 2
    assert (f"osir restore: error: output '{src / 'a.png'}' would overwrite the input '{src / 'a.png'}': choose "
            "another -o folder, a --suffix or another --ext") in capsys.readouterr().err
    assert main([*args, str(src / "a.png"), "-o", str(src / "a.png")]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert main([*args, str(src / "a.png"), "-o", str(src)]) == 2        # an image into its own folder
    assert f"output '{src / 'a.png'}' would overwrite the input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before
    cv2.imwrite(str(src / "a.jpg"), _smooth(rng, 8, 8))
    assert main([*args, str(src), "-o", str(tmp_path / "out")]) == 2
    assert (f"inputs '{src / 'a.jpg'}' and '{src / 'a.png'}' would both be written to '{tmp_path / 'out' / 'a.png'}'"
            in capsys.readouterr().err)
    (src / "a.jpg").unlink()
    # an output folder inside the input folder: allowed, and its own files are never read as inputs
    for _ in range(2):
        assert main([*args, str(src), "-o", str(src / "restored")]) == 0
        assert "2 images restored, 0 failed, 0 skipped" in capsys.readouterr().out
    assert sorted(p.relative_to(src).as_posix() for p in (src / "restored").rglob("*.png")) == \
        ["restored/a.png", "restored/sub/b.png"]


def test_user_errors_are_one_line(tmp_path, rrdb, capsys):
    weights, _ = rrdb
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((8, 8, 3), 128, np.uint8))
    out = str(tmp_path / "out")
    assert main(["--model", "realesrgan-x8", "--weights", str(weights), str(img), "-o", out]) == 2
    assert capsys.readouterr().err.strip() == (
        "osir restore: options error: --model: unknown model 'realesrgan-x8' (did you mean 'realesrgan-x4'?); "
        f"allowed: {', '.join(available_models())}")
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(img), "-o", out, "--steps", "4"]) == 2
    assert capsys.readouterr().err.strip() == (
        "osir restore: options error: --steps: realesrgan-x4 (RealESRGAN) is a feed-forward method; steps and "
        "samplers apply to the diffusion methods (DA-CLIP, IR-SDE, Refusion, ZeroShot)")
    assert main(["--model", "irsde-denoise", "--weights", str(weights), str(img), "-o", out]) == 2
    assert "--model irsde-denoise: expects ConditionalUNet weights (IRSDE), but" in capsys.readouterr().err
    assert main(["--model", "realesrgan-x4", "--weights", str(tmp_path / "missing.pth"), str(img), "-o", out]) == 2
    assert capsys.readouterr().err.strip() == (f"osir restore: error: weights file not found: '{tmp_path / 'missing.pth'}' "
                                              "('realesrgan-x4' restores with the Real-ESRGAN x4 generator "
                                              "('RealESRGAN_x4plus.pth', from github.com/xinntao/Real-ESRGAN/releases))")
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(tmp_path / "nope"), "-o", out]) == 2
    assert capsys.readouterr().err.strip() == f"osir restore: error: input not found: '{tmp_path / 'nope'}'"
    assert main(["--model", "realesrgan-x4", "--weights", str(weights), str(img), "-o", out, "--precision", "fp16"]) == 2
    assert capsys.readouterr().err.strip() == (
        "osir restore: options error: --precision fp16: osir's methods autocast to fp16 on accelerators only (on the "
        "CPU it would silently run fp32); use --precision bf16 or fp32 on the CPU")
    x2 = tmp_path / "x2.safetensors"
    save_network(_rrdbnet(scale=2), x2)
    assert main(["--model", "realesrgan-x4", "--weights", str(x2), str(img), "-o", out]) == 2
    assert capsys.readouterr().err.strip() == (
        f"osir restore: options error: --model realesrgan-x4 is x4, but '{x2}' holds a x2 RRDBNet; use --model "
        "realesrgan-x2 or leave --model out")
    assert main(["--model", "daclip-uir", "--weights", str(weights), str(img), "-o", out]) == 2
    assert "expects DACLIPUNet weights (DACLIPUIR)" in capsys.readouterr().err
    assert not Path(out).exists()


def test_bf16_autocast_is_close_to_fp32_and_not_identical(rrdb):
    weights, _ = rrdb
    image = np.random.default_rng(4).random((12, 12, 3), dtype=np.float32)
    fp32 = load_restorer(weights, "realesrgan-x4").restore(image)
    bf16 = load_restorer(weights, "realesrgan-x4", precision="bf16").restore(image)
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == (48, 48, 3)
    assert 0 < np.abs(fp32 - bf16).max() < 0.05


def test_diffusion_steps_sampler_and_seeds(tmp_path, unet, capsys):
    image = (np.random.default_rng(5).random((16, 16, 3)) * 255).astype(np.uint8)
    restorer = load_restorer(unet, "irsde-deraining")
    assert restorer.is_diffusion and restorer.method == "IRSDE" and restorer.scale == 1 and restorer.steps == 100
    assert restorer.model.networks["g"].init_conv.weight.shape[0] == 4          # nf from the weights
    a = restorer.restore(image, steps=3, seed=1)
    assert np.array_equal(a, restorer.restore(image, steps=3, seed=1))
    assert np.abs(a - restorer.restore(image, steps=3, seed=2)).max() > 1e-3
    assert np.abs(a - restorer.restore(image, steps=2, seed=1)).max() > 1e-3
    assert np.abs(a - restorer.restore(image, steps=3, sampler="ode", seed=1)).max() > 1e-3
    assert len(restorer.model.timesteps) == 101 and restorer.model.sampler.__name__ == "sample_posterior"   # restored
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "x.png"), image[:, :, ::-1])
    base = ["--model", "irsde-deraining", "--weights", str(unet), str(src), "--steps", "3"]
    for out, seed in (("s1", 1), ("s1b", 1), ("s2", 2)):
        assert main([*base, "-o", str(tmp_path / out), "--seed", str(seed)]) == 0
    s1, s1b, s2 = (cv2.imread(str(tmp_path / o / "x.png")) for o in ("s1", "s1b", "s2"))
    assert np.array_equal(s1, s1b) and not np.array_equal(s1, s2)
    assert np.array_equal(s1[:, :, ::-1], _quantise(a, 255))   # the CLI's seed 1 = the API's seed 1
    capsys.readouterr()
    assert main([*base[:-1], "0", "-o", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip() == \
        "osir restore: options error: --steps: irsde-deraining samples 1 to T=100 steps, got 0"
    assert main([*base, "-o", str(tmp_path / "bad"), "--sampler", "posterier"]) == 2
    assert "--sampler: unknown sampler 'posterier' (did you mean 'posterior'?); registered: " in capsys.readouterr().err


def test_options_file_instead_of_a_model(tmp_path, unet, capsys):
    opt = tmp_path / "test.yml"
    opt.write_text(f"_base_: {REPO / 'options' / 'demo.yml'}\nname: mine\n"
                   "method: {network: {type: ConditionalUNet, nf: 4, depth: 2, attn_levels: null}}\n")
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), (np.random.default_rng(6).random((16, 16, 3)) * 255).astype(np.uint8))
    assert main(["--options", str(opt), "--weights", str(unet), str(img), "-o", str(tmp_path / "out")]) == 0
    assert "1 images restored" in capsys.readouterr().out and (tmp_path / "out" / "x.png").is_file()
    restorer = load_restorer(unet, options=opt)
    assert restorer.name == "mine" and restorer.steps == 10          # demo.yml's sample_steps


def test_presets_mirror_their_options_files_and_validate():
    from osir.core.options import load_options
    from osir.restore import _resolve
    deliberate = {"osediff": {"merge_lora"}}        # options/test/osediff.yml merges LoRA; osediff.yml trains
    for name, preset in PRESETS.items():
        assert available_models()[name] == preset.description
        raw = {"name": name, "method": dict(preset.method), "path": {"pretrained": {}}}
        ours = _resolve(raw, [f"{k}=x" for k in preset.needs], preset.needs)["method"]   # every key a real option
        assert ours["type"] == preset.method["type"]
        if preset.source:
            method = load_options(REPO / preset.source)["method"]
            differ = {k for k in preset.method if method.get(k) != ours[k]} - deliberate.get(name, set())
            assert not differ, f"{name}: {sorted(differ)} differ from {preset.source}"


def test_python_m_osir_restore_help():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "osir.restore", "--help"], check=False, capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.startswith("usage: osir restore")
    assert all(name in done.stdout for name in PRESETS) and "--precision {fp32,bf16,fp16}" in done.stdout


def test_assumed_sampler_settings_are_named(unet):
    """IR-SDE weights do not hold lambda / T: restoring from the weights alone says what was assumed and how
    to change it (the release's deraining values; denoising used lambda 70)."""
    from osir.restore import _recognised_options
    opt, _, note = _recognised_options(unet, None)
    assert opt["method"]["max_sigma"] == 10 and opt["method"]["T"] == 100
    assert "assumed max_sigma=10 T=100 eps=0.005 sampler=posterior (not in the weights: IR-SDE's deraining" in note
    assert "--set method.<key>=VALUE" in note


def test_card_shortcuts_are_refused_where_they_clash(monkeypatch):
    """A card's ``OptionFlag`` that repeats another card's or one of restore's own options is one clear error."""
    from osir import restore
    from osir.core import card as card_module
    from osir.core.card import MethodCard, OptionFlag
    from osir.core.registry import OptionsError
    cards = card_module.cards()
    for flag, message in (("--steps", r"the Fake card's shortcut --steps is already an option of osir restore"),
                          ("--task", r"the shortcut --task is declared by the ZeroShot and the Fake cards")):
        fake = MethodCard(name="fake", methods=("Fake",), title="Fake", flags=(OptionFlag(flag, "method.x", "x"),))
        monkeypatch.setattr(card_module, "cards", lambda fake=fake: [*cards, fake])
        with pytest.raises(OptionsError, match=message):
            restore.build_parser()

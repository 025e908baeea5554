"""ONNX export: tiny random osir networks exported with dynamic shapes reproduce PyTorch in onnxruntime at
sizes other than the export size; the model card records the weights' hash; --int8 writes a quantised graph
that runs and stays close to fp32; networks that are not exportable are refused with one line."""
import hashlib

import numpy as np
import onnx
import pytest
import torch

from osir.core.checkpoint import save_network
from osir.export import export_onnx, main, session, smooth_image
from osir.methods.daclip.unet import DACLIPUNet
from osir.methods.irsde.arch import ConditionalUNet
from osir.methods.realesrgan import RRDBNet
from osir.methods.refusion.arch import CompressionUNet, ConditionalNAFNet
from osir.model_card import read_model_card
from osir.core.registry import OptionsError

TOL = 1e-4


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (NAFNet's beta / gamma start at zero and would switch its blocks off)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1))
    return net.eval()


def dims(sess, name):
    shape = next(i.shape for i in sess.get_inputs() if i.name == name)
    return [d if isinstance(d, str) else int(d) for d in shape]


def test_rrdbnet_cli_round_trip_card_and_int8(tmp_path, capsys):
    torch.manual_seed(0)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4).eval()     # recognised from its keys
    weights = tmp_path / "net_g.safetensors"
    save_network(net, weights)
    out = tmp_path / "onnx" / "sr.onnx"
    assert main(["onnx", "--weights", str(weights), "-o", str(out), "--int8", "--check-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "sr.int8.onnx" in printed

    sess = session(out)
    assert dims(sess, "lq") == ["batch", 3, "height", "width"]
    lq = torch.rand(3, 3, 29, 37)                      # exported at 2x24x16, checked at 32 and 35x27
    with torch.no_grad():
        ref = net(lq).numpy()
    got = sess.run(None, {"lq": lq.numpy()})[0]
    assert got.shape == (3, 3, 116, 148) and np.abs(got - ref).max() < TOL

    card = read_model_card(out)
    assert card["source"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card["method"] == "RealESRGAN" and card["format"] == "onnx" and card["arch"] == "RRDBNet"
    assert card["hyper_parameters"]["num_block"] == 1 and card["hyper_parameters"]["num_feat"] == 8
    assert card["opset"] == onnx.load(str(out)).opset_import[0].version
    assert 0 <= card["max_abs_difference"] < TOL and set(card["checked_at"]) == {"1x32x32", "2x35x27"}

    # int8: QDQ nodes, runs at a new size; on a smooth input it stays close to fp32.  Activations are uint8
    # (a step is 1/255 of each tensor's calibrated range) and the rounding errors of the ~12 quantised layers
    # add up (measured: rms 1.7 % of the output's std, max 0.0064), so allow rms 5 % of the std and 0.01
    # (2.5 grey levels) at most; it must differ from fp32, or nothing was quantised.
    int8 = out.with_name("sr.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = smooth_image(40, 28)[None].transpose(0, 3, 1, 2).copy()
    fp32 = sess.run(None, {"lq": x})[0]
    q = session(int8).run(None, {"lq": x})[0]
    assert q.shape == fp32.shape == (1, 3, 160, 112)
    rms = float(np.sqrt(np.mean((q - fp32) ** 2)))
    assert 0 < rms < 0.05 * fp32.std() and np.abs(q - fp32).max() < 0.01
    card8 = read_model_card(int8)
    assert card8["quantization"]["format"] == "QDQ" and card8["source"]["sha256"] == card["source"]["sha256"]
    assert card8["int8_vs_fp32"]["psnr"] > 20


@pytest.mark.parametrize("kind", ["nafnet", "unet"])
def test_noise_networks_with_time_input(tmp_path, kind):
    if kind == "nafnet":
        net, hp = randomised(ConditionalNAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])), {}
        with torch.no_grad():     # at the generic scale the time embedding moves the output by only ~1e-5:
            for name, p in net.named_parameters():     # open the blocks and strengthen the time MLPs
                if name.endswith(("beta", "gamma")):
                    p.fill_(1.0)
                elif "mlp" in name and p.dim() > 1:
                    p.mul_(2.5)
    else:
        net, hp = randomised(ConditionalUNet(nf=8, depth=2)), {"nf": 8, "depth": 2}
    out = tmp_path / f"{kind}.onnx"
    [record] = export_onnx(net, out, method="X", hyper_parameters=hp, check_size=32, log=lambda _: None)
    assert record["max_abs_difference"] < TOL
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == ["x_t", "mu", "t"] and dims(sess, "t") == ["batch"]
    gen = torch.Generator().manual_seed(1)
    x_t, mu = torch.rand(3, 3, 37, 29, generator=gen), torch.rand(3, 3, 37, 29, generator=gen)   # not a multiple of 4
    t = torch.tensor([1.0, 17.0, 93.0])
    with torch.no_grad():
        ref = net(x_t, mu, t).numpy()
    got = sess.run(None, {"x_t": x_t.numpy(), "mu": mu.numpy(), "t": t.numpy()})[0]
    assert got.shape == ref.shape == (3, 3, 37, 29) and np.abs(got - ref).max() < TOL
    # the time input matters: another t gives another output, in both
    with torch.no_grad():
        other = net(x_t, mu, t + 40).numpy()
    assert np.abs(other - ref).max() > 10 * TOL
    assert np.abs(sess.run(None, {"x_t": x_t.numpy(), "mu": mu.numpy(), "t": (t + 40).numpy()})[0] - other).max() < TOL


def test_compression_model_is_an_encoder_and_a_decoder(tmp_path):
    net = randomised(CompressionUNet(ch=4, ch_mult=[1, 2], embed_dim=2))
    records = export_onnx(net, tmp_path / "l.onnx", method="RefusionCompression", hyper_parameters={},
                          check_size=32, log=lambda _: None)
    assert [r["path"].name for r in records] == ["l.encoder.onnx", "l.decoder.onnx"]
    enc, dec = session(tmp_path / "l.encoder.onnx"), session(tmp_path / "l.decoder.onnx")
    gen = torch.Generator().manual_seed(2)
    lq, gt = torch.rand(2, 3, 45, 38, generator=gen), torch.rand(2, 3, 45, 38, generator=gen)
    z_lq, *skips = enc.run(None, {"image": lq.numpy()})
    z_gt = enc.run(None, {"image": gt.numpy()})[0]
    with torch.no_grad():
        ref_z, ref_skips = net.encode(lq)
        ref = net.decode(net.encode(gt)[0], ref_skips)            # latent Refusion: another latent, the LQ's skips
    assert np.abs(z_lq - ref_z.numpy()).max() < TOL and len(skips) == len(ref_skips) == 5   # h0, two per level
    names = [i.name for i in dec.get_inputs()]
    got = dec.run(None, dict(zip(names, [z_gt, *skips])))[0]
    assert got.shape == ref.shape == (2, 3, 48, 40) and np.abs(got - ref.numpy()).max() < TOL
    assert read_model_card(tmp_path / "l.decoder.onnx")["role"] == "latent Refusion compression decoder"


def test_model_and_set_give_the_architecture_and_the_tolerance_is_enforced(tmp_path, capsys):
    weights = tmp_path / "net_g.safetensors"          # growth 4: not recognised, --model / --set name it
    save_network(RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4, scale=4), weights)
    args = ["onnx", "--weights", str(weights), "-o", str(tmp_path / "sr.onnx"), "--check-size", "16"]
    assert main(args) == 2
    assert "(name the architecture with --model: realesrgan" in capsys.readouterr().err
    assert main(args + ["--model", "realesrgan", "--set", "num_feat=8", "num_block=1", "num_grow_ch=4",
                        "--tolerance", "1e-12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("osir export: checkpoint error: ") and "\n" not in err.strip()
    assert "onnxruntime and PyTorch differ by" in err and "above --tolerance 1e-12; file removed" in err
    assert not (tmp_path / "sr.onnx").exists()


def test_not_exportable_networks_are_refused(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"            # recognised as RRDBNet
    save_network(RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4), weights)
    assert main(["onnx", "--model", "osediff", "--weights", str(weights), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("osir export: options error: --model osediff: cannot be exported to ONNX: OSEDiff is "
                          "Stable Diffusion 2.1") and "exportable: realesrgan" in err and "\n" not in err
    assert main(["onnx", "--model", "irsde", "--weights", str(weights), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--model irsde expects ConditionalUNet weights, but" in capsys.readouterr().err
    unet = DACLIPUNet(nf=32, ch_mult=[1, 2], context_dim=8, cross_attention_levels=[1])
    with pytest.raises(OptionsError, match="DACLIPUNet cannot be exported to ONNX: DA-CLIP universal IR's noise "
                                           "network needs the DA-CLIP encoder's degradation and content embeddings"):
        export_onnx(unet, tmp_path / "d.onnx", method="DACLIPUIR", hyper_parameters={})
    assert not list(tmp_path.glob("*.onnx"))


def test_weights_of_an_osir_run_record_its_options_hash(tmp_path, capsys):
    import yaml
    run = tmp_path / "demo_sr_x4"
    (run / "models").mkdir(parents=True)
    spec = {"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 32,
            "scale": 4}
    options = {"name": "demo_sr_x4", "method": {"type": "RealESRGAN", "scale": 4, "network": spec}}
    (run / "options.yml").write_text(yaml.safe_dump(options))
    weights = run / "models" / "net_g_ema_10.safetensors"
    save_network(RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4), weights)
    out = tmp_path / "sr.onnx"
    assert main(["onnx", "--weights", str(weights), "-o", str(out), "--check-size", "16"]) == 0
    card = read_model_card(out)
    # the card's definition: sha256 of the options as YAML with sorted keys
    expected = hashlib.sha256(yaml.safe_dump(options, sort_keys=True, default_flow_style=False).encode()).hexdigest()
    assert card["training_options_sha256"] == expected and card["method"] == "RealESRGAN"

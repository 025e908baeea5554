"""ADM U-Net (issue 25): the released priors' layouts, strict weights-only loading, and the network's parts checked
against their definitions (sinusoidal time embedding, AdaGN residual block, legacy / new qkv head layouts)."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from osir.core.checkpoint import CheckpointError
from osir.core.registry import ARCHS, OptionsError
from osir.methods.zeroshot.adm import (ADM_RELEASES, ADMUNet, AttentionBlock, ResBlock, adm_arguments, load_adm,
                                       timestep_embedding)
from tests.conftest import FIXTURES

LAYOUTS = {"ffhq_10m": FIXTURES / "checkpoints" / "adm_ffhq256.json",       # copied from shared/checkpoints
           "256x256_diffusion_uncond": FIXTURES / "checkpoints" / "adm_imagenet256_uncond.json"}
#: a tiny ADM with every feature of the releases: scale-shift norm, residual up/down-sampling, 2 attention heads
TINY = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions=16,
            num_heads=4, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True)


def layout(release):
    return json.loads(LAYOUTS[release].read_text())


@pytest.mark.parametrize("release", sorted(LAYOUTS))
def test_release_layout_keys_shapes_and_parameter_count(release):
    """Built from the release's flags (on the meta device: nothing is allocated), the network has exactly the
    released state dict's keys, in order, with its shapes, and the released parameter count."""
    ref = layout(release)
    assert ADM_RELEASES[release]["constructor"] == ref["constructor"]
    assert ADM_RELEASES[release]["num_parameters"] == ref["num_parameters"]
    with torch.device("meta"):
        net = ADMUNet(**ref["constructor"])
    assert [(k, list(v.shape)) for k, v in net.state_dict().items()] == list(ref["keys"].items())
    assert sum(p.numel() for p in net.parameters()) == ref["num_parameters"]
    assert net.out_channels == 6 and net.channel_mult == (1, 1, 2, 2, 4, 4)


def test_release_flags_resolve_like_create_model():
    imagenet = ADM_RELEASES["256x256_diffusion_uncond"]["constructor"]
    assert adm_arguments(imagenet)["attention_resolutions"] == (32, 16, 8)
    assert adm_arguments(ADM_RELEASES["ffhq_10m"]["constructor"])["attention_resolutions"] == (16,)
    assert adm_arguments({"image_size": 128, "channel_mult": ""})["channel_mult"] == (1, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="num_chanels"):
        adm_arguments({"num_chanels": 3})


def release_like_state(release, generator):
    """Random tensors with the release's keys and shapes, all views of one storage at different offsets (the
    file stays ~20 MB for 94 M parameters)."""
    shapes = layout(release)["keys"]
    largest = max(math.prod(shape) for shape in shapes.values())
    storage = torch.randn(largest + 100_000, generator=generator) * 0.02
    return {key: storage[(i * 997) % 100_000:][:math.prod(shape)].view(shape)
            for i, (key, shape) in enumerate(shapes.items())}


@pytest.mark.parametrize("release", ["ffhq_10m", "256x256_diffusion_uncond"])
def test_a_release_state_dict_loads_strictly_with_its_values(tmp_path, release):
    """Both releases: a state dict with the published keys and shapes (random values) loads strictly into the
    release's constructor (the ImageNet model: 552,814,086 parameters, 2.2 GB as fp32)."""
    state = release_like_state(release, torch.Generator().manual_seed(0))
    torch.save(state, tmp_path / "prior.pt")
    net = load_adm(tmp_path / "prior.pt", **ADM_RELEASES[release]["constructor"])
    assert sum(p.numel() for p in net.parameters()) == ADM_RELEASES[release]["num_parameters"]
    loaded = net.state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters()) and not net.training
    # the file's tensors share one storage: the network's parameters must not alias each other
    assert len({p.untyped_storage().data_ptr() for p in net.parameters()}) == len(list(net.parameters()))


@pytest.mark.parametrize("change, expected", [
    ("drop", r"1 missing keys: middle_block\.1\.qkv\.bias$"),
    ("reshape", r"1 shape mismatches: out\.2\.weight: checkpoint \(3, 32, 3, 3\) vs network \(6, 32, 3, 3\)$"),
])
def test_mismatched_state_dict_is_refused_naming_file_and_key(tmp_path, change, expected):
    state = ADMUNet(**TINY).state_dict()
    if change == "drop":
        del state["middle_block.1.qkv.bias"]
    else:
        state["out.2.weight"] = torch.zeros(3, 32, 3, 3)     # a learn_sigma=False output layer
    path = tmp_path / "mismatched.pt"
    torch.save(state, path)
    refusal = rf"^ADM weights '{re.escape(str(path))}' do not fit ADMUNet.*{expected}"
    with pytest.raises(CheckpointError, match=refusal) as err:
        load_adm(path, **TINY)
    assert "\n" not in str(err.value)


class Payload:
    """A pickled object whose unpickling would create a marker file (code a weights-only reader must not run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"time_embed.0.weight": torch.zeros(128, 32), "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"'.*evil\.pt'.*(weights-only|would call)"):
        load_adm(path, **TINY)
    assert not marker.exists()
    # a weights-only file that is not a plain state dict (a training state) is refused too
    torch.save({"model": ADMUNet(**TINY).state_dict(), "step": 5}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match=r"'.*state\.pt' are not a plain state dict .*model, step"):
        load_adm(tmp_path / "state.pt", **TINY)


def test_timestep_embedding_is_adms_closed_form():
    """e(t)_j = cos(t 10000^(-j/h)) for j < h, sin(t 10000^(-(j-h)/h)) for j >= h, h = dim // 2; odd dim: a 0."""
    t = [0, 1, 17, 999]
    for dim in (32, 7):
        h = dim // 2
        expected = [[math.cos(s * 10000 ** (-j / h)) for j in range(h)] + [math.sin(s * 10000 ** (-j / h))
                    for j in range(h)] + [0.0] * (dim % 2) for s in t]
        got = timestep_embedding(torch.tensor(t), dim)
        torch.testing.assert_close(got, torch.tensor(expected), atol=2e-4, rtol=0)
    # the network feeds that embedding of its steps to its time MLP
    net = ADMUNet(**TINY)
    seen = []
    net.time_embed[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    net(torch.zeros(4, 3, 32, 32), torch.tensor(t))
    torch.testing.assert_close(seen[0], timestep_embedding(torch.tensor(t), 32), atol=0, rtol=0)


def test_fresh_network_outputs_zero_from_its_zero_initialised_layers():
    """ADM zero-initialises the output conv, the last conv of every residual block and every attention projection:
    a fresh network outputs exactly 0; with an output bias b (weights still 0) it outputs exactly b."""
    torch.manual_seed(0)
    net = ADMUNet(**TINY)
    state = net.state_dict()
    zero_weights = {k for k, v in state.items() if v.ndim >= 2 and not v.any()}     # conv / linear weights
    expected = {k for k in state if k.endswith(".weight") and (k == "out.2.weight" or ".out_layers.3." in k
                                                                or ".proj_out." in k)}
    assert zero_weights == expected and len(expected) == 15     # 10 residual blocks, 4 attentions, out
    assert not any(state[k.replace(".weight", ".bias")].any() for k in expected)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 500])
    with torch.no_grad():
        assert net(x, t).shape == (2, 6, 32, 32) and not net(x, t).any()
        bias = torch.arange(6.0) - 2.5
        net.out[2].bias.copy_(bias)
        assert torch.equal(net(x, t), bias.view(1, 6, 1, 1).expand(2, 6, 32, 32))
    assert ADMUNet(**{**TINY, "learn_sigma": False})(x, t).shape == (2, 3, 32, 32)


def test_decoder_takes_its_input_then_the_mirrored_encoder_activation():
    """U-Net wiring: decoder block i is fed cat(previous block's output, encoder block N-1-i's output), in that
    channel order (last encoder activation first out), and the output head reads the last decoder block."""
    torch.manual_seed(0)
    net = ADMUNet(**TINY)
    for p in net.parameters():          # random weights everywhere, so no block passes its input through
        torch.nn.init.normal_(p, std=0.1)
    outputs, inputs = {}, {}
    blocks = [*net.input_blocks, net.middle_block, *net.output_blocks, net.out]
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda m, args, out, i=i: outputs.__setitem__(i, out))
        block.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
    with torch.no_grad():
        result = net(torch.randn(1, 3, 32, 32), torch.tensor([250]))
    middle = len(net.input_blocks)      # blocks[:middle] is the encoder, blocks[middle] the middle block
    for j in range(len(net.output_blocks)):
        expected = torch.cat([outputs[middle + j], outputs[middle - 1 - j]], dim=1)
        assert torch.equal(inputs[middle + 1 + j], expected)
    head = len(blocks) - 1
    assert torch.equal(inputs[head], outputs[head - 1]) and torch.equal(result, outputs[head])


def test_resblock_is_adagn_with_scale_then_shift_and_resamples_both_branches():
    """h = conv(silu(GN(x))) (avg-pooled after the activation when down), [scale, shift] = Linear(silu(emb)),
    out = skip(pool(x)) + conv(silu(GN(h) (1 + scale) + shift))."""
    torch.manual_seed(0)
    block = ResBlock(32, 16, 0.0, out_channels=64, use_scale_shift_norm=True, down=True)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, emb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    n1, _, c1 = block.in_layers
    h = F.conv2d(F.avg_pool2d(F.silu(F.group_norm(x, 32, n1.weight, n1.bias)), 2), c1.weight, c1.bias, padding=1)
    lin = block.emb_layers[1]
    scale, shift = (F.silu(emb) @ lin.weight.T + lin.bias).split(64, dim=1)
    n2, c2 = block.out_layers[0], block.out_layers[3]
    h = F.group_norm(h, 32, n2.weight, n2.bias) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    h = F.conv2d(F.silu(h), c2.weight, c2.bias, padding=1)
    skip = F.conv2d(F.avg_pool2d(x, 2), block.skip_connection.weight, block.skip_connection.bias)
    torch.testing.assert_close(block(x, emb), skip + h, atol=1e-5, rtol=1e-5)


def reference_attention(block, x, legacy):
    """x + proj(attention) with qkv's channels read as, for head i of width d: legacy q, k, v =
    rows [3di, 3di+d), [3di+d, 3di+2d), [3di+2d, 3di+3d); new order q, k, v = rows [di, di+d) + {0, C, 2C}."""
    b, c, hgt, wid = x.shape
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(F.group_norm(flat, 32, block.norm.weight, block.norm.bias), block.qkv.weight, block.qkv.bias)
    d = c // block.num_heads
    heads = []
    for i in range(block.num_heads):
        rows = [(3 * d * i + j * d) if legacy else (j * c + d * i) for j in range(3)]
        q, k, v = (qkv[:, r:r + d] for r in rows)
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
        heads.append(torch.einsum("bts,bcs->bct", weights, v))
    out = F.conv1d(torch.cat(heads, dim=1), block.proj_out.weight, block.proj_out.bias)
    return (flat + out).reshape(b, c, hgt, wid)


def test_attention_reads_qkv_in_the_legacy_head_order():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 4, 4)
    outputs = {}
    for legacy in (True, False):
        block = AttentionBlock(64, num_heads=4, num_head_channels=32, legacy_order=legacy)
        torch.manual_seed(1)      # the same random weights for both orders
        block.load_state_dict({k: torch.randn_like(v) * 0.3 for k, v in block.state_dict().items()})
        assert block.num_heads == 2        # num_head_channels overrides num_heads
        outputs[legacy] = block(x)
        torch.testing.assert_close(outputs[legacy], reference_attention(block, x, legacy), atol=1e-5, rtol=1e-5)
    # the same weights read in the other order compute another function: the release's order matters
    assert (outputs[True] - outputs[False]).abs().max() > 1e-2
    # a network built from the releases' flags uses the legacy order
    assert all(m.legacy_order for m in ADMUNet(**TINY).modules() if isinstance(m, AttentionBlock))


def test_registered_and_refuses_unsupported_options():
    assert ARCHS.get("ADMUNet") is ADMUNet
    assert isinstance(ARCHS.build({"type": "ADMUNet", **TINY}), ADMUNet)
    for flag in ("use_fp16", "use_checkpoint"):
        with pytest.raises(OptionsError, match=flag):
            ARCHS.build({"type": "ADMUNet", **TINY, flag: True}, "network")
    with pytest.raises(ValueError, match="multiples of 2"):
        ADMUNet(**TINY)(torch.zeros(1, 3, 33, 32), 3)

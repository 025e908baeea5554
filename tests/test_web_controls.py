"""osir web, issue 27 point 6: example photos (crops of scikit-image's bundled photos), the tile and precision
controls (per call), and a network only spandrel knows (a tiny random SwinIR in spandrel's layout) restored
through the page's API.  The page itself in a browser: tests/test_web.py."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osir.restore import load_restorer
from osir.web import AUTO, Demo, build_app, to_uint8

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid", "ignore:.*no_silent_downcasting",
                                        "ignore:The copy keyword is deprecated")


@pytest.fixture(scope="module")
def swinir(tmp_path_factory) -> Path:
    """spandrel's SwinIR (x2, one block of 12 channels), random weights, as a torch state dict."""
    from spandrel.architectures.SwinIR import SwinIR
    torch.manual_seed(0)
    net = SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2, upscale=2,
                 upsampler="pixelshuffledirect")
    with torch.no_grad():
        net.upsample[0].weight.mul_(0.3)          # outputs spread over (0, 1), not clamped
    path = tmp_path_factory.mktemp("swinir") / "swinir_x2.pth"
    torch.save(net.state_dict(), path)
    return path


def test_example_images_are_crops_of_scikit_images_photos(tmp_path):
    import skimage.data
    from osir.web import EXAMPLES, example_images
    paths = example_images(tmp_path / "examples")
    assert [p.name for p in paths] == ["astronaut.png", "coffee.png", "chelsea.png", "rocket.png"]
    for path, (name, (rows, columns)) in zip(paths, EXAMPLES.items()):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), getattr(skimage.data, name)()[rows, columns])
        assert Image.open(path).size == (128, 128)


def test_tile_and_precision_apply_per_call(swinir, tmp_path):
    import gradio as gr
    from osir.web import example_images
    crop = example_images(tmp_path)[0]
    image = np.asarray(Image.open(crop))
    demo = Demo([swinir])
    whole = demo.restore(str(crop), AUTO, str(swinir), tile=0)
    tiled = demo.restore(str(crop), AUTO, str(swinir), tile=48)
    assert "(fp32, whole image)" in whole[2] and "(fp32, tiles of 48 px)" in tiled[2]
    reference = load_restorer(swinir)
    np.testing.assert_array_equal(whole[0][1], to_uint8(reference.restore(image)))
    np.testing.assert_array_equal(tiled[0][1], to_uint8(reference.restore(image, tile=48)))
    assert np.abs(tiled[0][1].astype(int) - whole[0][1].astype(int)).max() > 0     # SwinIR: tiles show at the seams
    bf16 = demo.restore(str(crop), AUTO, str(swinir), tile=0, precision="bf16")
    assert "(bf16, whole image)" in bf16[2]
    difference = np.abs(bf16[0][1].astype(int) - whole[0][1].astype(int))
    assert 0 < difference.mean() < 3                                                # autocast to bf16 ran
    assert sorted(r.precision for r in set(demo._cache.values())) == ["bf16", "fp32"]   # one model per precision
    with pytest.raises(gr.Error, match="--precision fp16: osir's methods autocast to fp16 on accelerators only"):
        demo.restore(str(crop), AUTO, str(swinir), precision="fp16")
    for bad in (-3, 2.5):
        with pytest.raises(gr.Error, match=f"tile must be 0 \\(whole images\\) or a size in pixels, got {bad}"):
            demo.restore(str(crop), AUTO, str(swinir), tile=bad)
    assert demo.own_tile(AUTO, str(swinir))["value"] == 0                            # no release tile: whole images


def test_the_page_offers_examples_and_its_api_takes_tile_and_precision(swinir):
    """The examples, the tile and precision controls in the page's configuration; the Restore endpoint with the
    two new inputs, on a SwinIR file (an architecture only spandrel knows), through gradio_client."""
    from gradio_client import Client, handle_file
    from osir.web import EXAMPLES
    app = build_app([swinir])
    props = {c["props"].get("elem_id"): c for c in app.get_config_file()["components"]}
    assert props["tile"]["type"] == "number" and props["tile"]["props"]["value"] == 0
    assert props["precision"]["props"]["value"] == "fp32"
    assert [s[0]["orig_name"] for s in props["examples"]["props"]["samples"]] == [f"{n}.png" for n in EXAMPLES]
    example = Path(props["examples"]["props"]["samples"][0][0]["path"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                                   share=False)
    try:
        client = Client(url, verbose=False)
        (_, after), png, status = client.predict(handle_file(str(example)), AUTO, str(swinir), None, None, 0, 48,
                                                 "bf16", api_name="/restore")
    finally:
        app.close()
    assert "`SpandrelModel` (SpandrelModel, feed-forward, ×2)" in status and "(bf16, tiles of 48 px)" in status
    image = np.asarray(Image.open(example).convert("RGB"))
    expected = to_uint8(load_restorer(swinir, precision="bf16").restore(image, tile=48))
    result = np.asarray(Image.open(png).convert("RGB"))
    assert result.shape == (256, 256, 3)
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 1

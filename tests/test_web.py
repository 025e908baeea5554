"""osir web: the Gradio page driven end to end in headless Chromium (Debian's chromium +
chromium-driver through selenium; skipped where they are missing), its API without a browser, and its
errors.  The model is a tiny randomly initialised RRDBNet (x2) saved as osir safetensors."""
from __future__ import annotations

import io
import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from PIL import Image

from osir.core.checkpoint import save_network
from osir.methods.realesrgan import RRDBNet
from osir.core.registry import OptionsError
from osir.restore import load_restorer
from osir.web import AUTO, Demo, build_app, main, to_uint8, weight_files

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # the local server, never a proxy


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, scale=2)
    path = tmp_path_factory.mktemp("weights") / "random_rrdbnet_1block_x2.safetensors"
    save_network(net, path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A held-out photo (a 128² crop of skimage's astronaut) with Gaussian noise (sigma 15), as PNG."""
    import skimage.data
    clean = skimage.data.astronaut()[30:158, 180:308].astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 15, clean.shape), 0, 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("photo") / "astronaut_noisy.png"
    Image.fromarray(noisy).save(path)
    return path, noisy


@pytest.fixture(scope="module")
def server(weights):
    """The page on a free local port, served from a background thread."""
    app = build_app([weights])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                   quiet=True, show_error=True, share=False)
    yield url
    app.close()


def fetch(url: str) -> np.ndarray:
    with LOCAL.open(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def expected_result(weights: Path, image: np.ndarray) -> np.ndarray:
    return to_uint8(load_restorer(weights).restore(image))


def assert_is_result(result: np.ndarray, image: np.ndarray, expected: np.ndarray) -> None:
    h, w = image.shape[:2]
    assert result.shape == (2 * h, 2 * w, 3)
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 1       # uint8 rounding
    before = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    assert np.abs(result.astype(int) - before.astype(int)).mean() > 20         # it did change the image
    assert len(np.unique(expected)) > 5 and expected.std() > 1                # not a constant image


def chrome():
    """Headless Debian Chromium through the system chromedriver, with every host but the local one
    unresolvable (the page must work offline)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"no browser: needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_browser_upload_restore_download(server, weights, photo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    path, image = photo
    driver = chrome()
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 40)
        status = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#status")))
        wait.until(EC.title_is("osir — image restoration"))
        text = " ".join(status.text.split())
        assert text == f"Loaded: RealESRGAN (RealESRGAN, feed-forward, ×2) from {weights.name} on cpu", text
        assert not driver.find_elements(By.CSS_SELECTOR, "#steps")        # a feed-forward method: no steps / seed
        assert not driver.find_elements(By.CSS_SELECTOR, "#seed")
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(str(path))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        driver.find_element(By.CSS_SELECTOR, "#restore-btn").click()
        link = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#result-file a[href][download]")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#slider img")) == 2)
        wait.until(lambda d: "128×128 → 256×256 in" in d.find_element(By.CSS_SELECTOR, "#status").text)

        expected = expected_result(weights, image)
        assert link.get_attribute("download").endswith(".png")
        assert_is_result(fetch(urljoin(server, link.get_attribute("href"))), image, expected)
        before, after = (fetch(urljoin(server, img.get_attribute("src")))
                         for img in driver.find_elements(By.CSS_SELECTOR, "#slider img"))
        assert_is_result(after, image, expected)
        np.testing.assert_array_equal(before, np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))

        # offline: everything the page loaded came from the local server, nothing failed to load
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(u.startswith((server, "data:", "blob:")) for u in loaded), loaded
        failed = [e["message"] for e in driver.get_log("browser") if "net::ERR" in e["message"]]
        assert not failed, failed

        target = os.environ.get("OSIR_WEB_SCREENSHOT")
        shot = (REPO / target if not Path(target).is_absolute() else Path(target)) if target else tmp_path / "web.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()


def test_api_restore_and_errors(server, weights, photo, tmp_path):
    """The page's Restore endpoint without a browser (gradio_client), then its errors as messages."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    path, image = photo
    client = Client(server, verbose=False)
    (_, after), png, status = client.predict(handle_file(str(path)), AUTO, str(weights), None, None, 0,
                                             api_name="/restore")
    expected = expected_result(weights, image)
    assert_is_result(np.asarray(Image.open(png).convert("RGB")), image, expected)
    assert_is_result(np.asarray(Image.open(after).convert("RGB")), image, expected)
    assert "128×128 → 256×256" in status
    with pytest.raises(AppError, match="upload an image first"):
        client.predict(None, AUTO, str(weights), None, None, 0, api_name="/restore")
    with pytest.raises(AppError, match=r"cannot load '.*' as irsde-denoise: .*--model irsde-denoise: expects "
                                       r"ConditionalUNet weights"):
        client.predict(handle_file(str(path)), "irsde-denoise", str(weights), None, None, 0, api_name="/restore")


def test_errors_are_messages(weights, photo, tmp_path):
    """Errors reach the page as gr.Error (one line, no traceback) and the command line as one line."""
    import gradio as gr

    demo = Demo([weights])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(gr.Error, match=f"cannot decode image '{text}'"):
        demo.restore(str(text), AUTO, str(weights))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\0" * 64)
    with pytest.raises(gr.Error, match=f"cannot load 'broken.safetensors' as {AUTO}: cannot read '{broken}' as "
                                       "safetensors"):
        demo.restore(str(photo[0]), AUTO, str(broken))
    with pytest.raises(OptionsError, match="--weights '.*missing.pth': no such file"):
        weight_files([tmp_path / "missing.pth"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionsError, match="no weights in --weights-dir '.*empty' "):
        weight_files([], tmp_path / "empty")


def test_a_missing_package_is_a_message_with_the_pip_command(weights, monkeypatch):
    """Choosing weights or a method in the page whose loader needs a package that is not installed (spandrel,
    hidden by ``sys.modules['spandrel'] = None``, so that importing it raises ModuleNotFoundError) is a
    gr.Error with the pip command, as on the command line; with the package back the same choice loads."""
    import gradio as gr

    demo = Demo([weights])
    with monkeypatch.context() as hidden:
        hidden.setitem(sys.modules, "spandrel", None)
        for method in (AUTO, "realesrgan-x2"):
            with pytest.raises(gr.Error) as caught:
                demo.restorer(method, str(weights))
            assert caught.value.message == (f"cannot load '{weights.name}' as {method}: needs the package 'spandrel', "
                                            "which is not installed (pip install spandrel)")
    assert demo.restorer(AUTO, str(weights)).scale == 2


def test_weights_dir_and_command_line(weights, tmp_path, capsys):
    other = tmp_path / "sub" / "b.pth"
    other.parent.mkdir()
    other.write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("skipped")
    assert weight_files([weights], tmp_path) == [weights.resolve(), other.resolve()]
    assert weight_files([other], tmp_path) == [other.resolve()]                  # each file once
    assert main(["--weights", str(tmp_path / "missing.pth")]) == 2
    assert capsys.readouterr().err.strip() == f"osir web: options error: --weights '{tmp_path / 'missing.pth'}': " \
                                              "no such file"
    assert main(["--weights", str(weights), "--model", "nosuch"]) == 2
    assert "--model: unknown model 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "give --weights and/or --weights-dir" in capsys.readouterr().err


def test_diffusion_controls_follow_the_method(tmp_path):
    """Steps, sampler and seed are offered for a diffusion method (a tiny IR-SDE U-Net), with its
    defaults, and a seed gives the same result twice."""
    from osir.methods.irsde import ConditionalUNet

    torch.manual_seed(0)
    net = ConditionalUNet(in_nc=3, out_nc=3, nf=16, depth=3, attn_levels=[3])
    path = tmp_path / "irsde_demo_random.safetensors"
    save_network(net, path)
    demo = Demo([path])
    status, steps, sampler, seed = demo.choose("irsde-demo", str(path))
    assert steps["visible"] and sampler["visible"] and seed["visible"]
    assert (steps["value"], sampler["value"]) == (10, "posterior")
    assert "diffusion, 10 posterior steps" in status
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    a = demo.restore(str(image), "irsde-demo", str(path), 3, "posterior", 1)
    b = demo.restore(str(image), "irsde-demo", str(path), 3, "posterior", 1)
    c = demo.restore(str(image), "irsde-demo", str(path), 3, "sde", 2)
    np.testing.assert_array_equal(a[0][1], b[0][1])
    assert a[0][1].shape == (16, 16, 3) and not np.array_equal(a[0][1], c[0][1])
    assert "in " in a[2] and "16×16 → 16×16" in a[2]

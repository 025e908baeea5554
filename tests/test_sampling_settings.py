"""Issue 22 point 2: sampling settings are arguments of ``restore`` (as k-diffusion's samplers take theirs),
never written into the method, so one method object serves several threads with different settings."""
import threading

import pytest
import torch

from osir.inference import restore_image
from osir.methods.irsde.method import IRSDE
from osir.methods.refusion.method import Refusion
from osir.core.registry import OptionsError


def _irsde(**kw):
    torch.manual_seed(0)
    return IRSDE(network={"type": "ConditionalUNet", "nf": 8, "depth": 2}, max_sigma=25, T=20, **kw)


def _refusion(**kw):
    torch.manual_seed(0)
    net = {"type": "ConditionalNAFNet", "img_channel": 3, "width": 8, "enc_blk_nums": [1, 1],
           "middle_blk_num": 1, "dec_blk_nums": [1, 1]}
    return Refusion(network=net, max_sigma=25, T=20, **kw)


def _restore(method, lq, **settings):
    with torch.no_grad():
        return method.restore({"lq": lq}, torch.Generator().manual_seed(3), **settings)


@pytest.mark.parametrize("build", [_irsde, _refusion])
def test_per_call_settings_equal_a_method_configured_with_them(build):
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    shared = build(sampler="posterior")
    state = shared.networks["g"].state_dict()
    for sampler, steps in [("ode", 4), ("sde", 7), ("posterior", 3)]:
        configured = build(sampler=sampler, sample_steps=steps)
        configured.networks["g"].load_state_dict(state)
        expected = _restore(configured, lq)
        got = _restore(shared, lq, sampler=sampler, steps=steps)
        assert torch.equal(got, expected), (sampler, steps)
    # the method itself is unchanged: its configured sampler and all T steps
    assert shared.sampler_name == "posterior" and len(shared.timesteps) == 21


def test_the_configured_posterior_extras_stay_with_the_configured_sampler():
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    method = _irsde(sampler="posterior", eta=0.0, clip_denoised=True, sample_steps=5)
    plain = _irsde(sampler="posterior", sample_steps=5)
    plain.networks["g"].load_state_dict(method.networks["g"].state_dict())
    # naming the configured sampler keeps its extras (eta 0, clamped x0); another sampler runs with its defaults
    assert torch.equal(_restore(method, lq, sampler="posterior"), _restore(method, lq))
    assert not torch.equal(_restore(method, lq), _restore(plain, lq))
    assert method.sampling("ode")[2] == {}


def test_steps_outside_one_to_t_are_refused_naming_the_range():
    method = _irsde()
    with pytest.raises(OptionsError, match=r"1 to T=20 steps, got 21"):
        _restore(method, torch.rand(1, 3, 16, 16), steps=21)
    with pytest.raises(OptionsError, match=r"unknown sampler 'odee'"):
        _restore(method, torch.rand(1, 3, 16, 16), sampler="odee")


def test_one_method_object_serves_threads_with_different_settings():
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    method = _irsde(sampler="posterior")
    settings = [("ode", 2), ("sde", 9), ("posterior", 5), ("ode", 13)] * 2
    expected = [_restore(method, lq, sampler=s, steps=n) for s, n in settings]
    got = [None] * len(settings)

    def work(i):
        got[i] = restore_image(method, {"lq": lq}, None, 32, torch.Generator().manual_seed(3),
                               sampler=settings[i][0], steps=settings[i][1])

    with torch.no_grad():
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(settings))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, (e, g) in enumerate(zip(expected, got)):
        assert torch.equal(e, g), settings[i]

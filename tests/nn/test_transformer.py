"""Tests of the latent spatio-temporal transformer."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from appa_engine.config import from_dict, to_dict
from appa_engine.errors import ConfigError
from appa_engine.nn.transformer import SpaceTimeTransformer, TransformerConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is faster, and robust on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(**kw) -> SpaceTimeTransformer:
    base = dict(in_channels=3, width=32, depth=2, heads=2, patch=(1, 1, 1), embedding=16)
    base.update(kw)
    return SpaceTimeTransformer(TransformerConfig(**base))


def randomise(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Random values everywhere, including the zero-initialised gates and head."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def inputs(B=2, K=4, Z=3, h=6, w=8, D=4, dtype=torch.float64):
    x = torch.randn(B, K, Z, h, w, dtype=dtype)
    return x, torch.randn(B, dtype=dtype), torch.randn(B, K, D, dtype=dtype)


@pytest.mark.parametrize("attention", ["full", "factorised"])
def test_untrained_network_outputs_zero(attention):
    net = make(attention=attention)
    x, c, d = inputs(dtype=torch.float32)
    y = net(x, c, date=d)
    assert y.shape == x.shape
    assert torch.equal(y, torch.zeros_like(x))


@pytest.mark.parametrize("patch", [(1, 1, 1), (2, 2, 2), (2, 1, 3), (3, 4, 1)])
@pytest.mark.parametrize("attention", ["full", "factorised"])
def test_shapes_with_padding_and_finite_gradients(patch, attention):
    net = randomise(make(patch=patch, attention=attention)).double()
    x, c, d = inputs(K=5, h=7, w=9)
    x.requires_grad_(True)
    y = net(x, c, date=d)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    # Every parameter takes part (nothing is silently unused).
    unused = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not unused


@pytest.mark.parametrize("attention", ["full", "factorised"])
@pytest.mark.parametrize("patch", [(1, 1, 1), (2, 2, 2)])
def test_equivariant_to_longitude_shifts_by_whole_tokens(attention, patch):
    net = randomise(make(attention=attention, patch=patch)).double()
    x, c, d = inputs(K=4, h=6, w=16)
    y = net(x, c, date=d)
    p_w = patch[2]
    for tokens in (1, 3):
        shifted = net(x.roll(tokens * p_w, -1), c, date=d)
        assert torch.allclose(shifted, y.roll(tokens * p_w, -1), atol=1e-10)
    # Controls: other shifts are not symmetries, so the test above could fail.
    assert not torch.allclose(net(x.roll(1, -2), c, date=d), y.roll(1, -2), atol=1e-3)  # latitude
    assert not torch.allclose(net(x.roll(1, 1), c, date=d), y.roll(1, 1), atol=1e-3)  # time
    if p_w > 1:
        assert not torch.allclose(net(x.roll(1, -1), c, date=d), y.roll(1, -1), atol=1e-3)


@pytest.mark.parametrize("attention", ["full", "factorised"])
def test_batch_elements_are_independent(attention):
    net = randomise(make(attention=attention)).double()
    x, c, d = inputs(B=3)
    y = net(x, c, date=d)
    x2, c2, d2 = x.clone(), c.clone(), d.clone()
    x2[1] += 1.0
    c2[1] += 1.0
    d2[1] += 1.0
    y2 = net(x2, c2, date=d2)
    assert torch.allclose(y2[[0, 2]], y[[0, 2]], atol=1e-12)
    assert not torch.allclose(y2[1], y[1], atol=1e-3)


def test_factorised_attention_mixes_space_then_time():
    # One spatial block: a change at time 0 stays at time 0 (the MLP and modulation act per
    # token, attention only within a time step).
    x, c, d = inputs(K=4)
    x2 = x.clone()
    x2[:, 0, :, 2, 3] += 1.0
    space = randomise(make(attention="factorised", depth=1)).double()
    change = (space(x2, c, date=d) - space(x, c, date=d)).abs().sum(dim=(0, 2))  # (K, h, w)
    assert change[0].sum() > 1e-6 and change[1:].max() < 1e-12
    assert (change[0] > 0).sum() > 1  # spread over space
    # Space then time: the change reaches other time steps at other locations.
    both = randomise(make(attention="factorised", depth=2)).double()
    change = (both(x2, c, date=d) - both(x, c, date=d)).abs().sum(dim=(0, 2))
    assert change[1, 0, 0] > 1e-6
    # Full attention mixes everything in one block.
    full = randomise(make(attention="full", depth=1)).double()
    change = (full(x2, c, date=d) - full(x, c, date=d)).abs().sum(dim=(0, 2))
    assert change[1:].min() > 0


def test_conditioning_on_noise_and_date():
    net = randomise(make()).double()
    x, c, d = inputs()
    y = net(x, c, date=d)
    assert not torch.allclose(net(x, c + 0.5, date=d), y, atol=1e-6)
    d2 = d.clone()
    d2[:, 2] += 1.0
    assert not torch.allclose(net(x, c, date=d2), y, atol=1e-6)
    assert net(x, c).shape == x.shape  # no date: noise conditioning only
    assert torch.allclose(net(x, c[0]), net(x, c[0].expand(2)))  # a scalar c_noise is shared
    no_date = randomise(make(date_features=0)).double()
    assert no_date(x, c).shape == x.shape
    with pytest.raises(ValueError, match="takes no date features"):
        no_date(x, c, date=d)


def test_modulation_varies_along_time_only():
    # With no attention mixing (depth 1, factorised: space only) and identical inputs at every
    # time step, the outputs differ between time steps only through the date.
    net = randomise(make(attention="factorised", depth=1)).double()
    x, c, d = inputs(K=3)
    x = x[:, :1].expand(-1, 3, -1, -1, -1).contiguous()
    same_date = d[:, :1].expand(-1, 3, -1)
    y = net(x, c, date=same_date)
    # Rotary time angles act on queries and keys of the same time step alike, so they cancel.
    assert torch.allclose(y[:, 0], y[:, 2], atol=1e-10)
    y = net(x, c, date=d)
    assert not torch.allclose(y[:, 0], y[:, 2], atol=1e-6)


def test_checkpointing_gives_the_same_gradients():
    net = randomise(make())
    ckpt = make(checkpointing=True)
    ckpt.load_state_dict(net.state_dict())
    x, c, d = inputs(dtype=torch.float32)
    grads = []
    for model in (net, ckpt):
        model.train()
        model(x, c, date=d).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for g, g_ckpt in zip(*grads):
        assert torch.allclose(g, g_ckpt, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_forward_mode_and_double_backward_with_the_math_kernel():
    net = randomise(make(patch=(2, 1, 1))).double()
    x, c, d = inputs()
    v = torch.randn_like(x)

    def f(x):
        return net(x, c, date=d)

    eps = 1e-6
    with sdpa_kernel(SDPBackend.MATH):
        _, jvp = torch.func.jvp(f, (x,), (v,))
        fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
        assert torch.allclose(jvp, fd, atol=1e-6 * fd.abs().max().item())
        # <u, J v> = <J^T u, v>: the reverse and forward modes agree.
        u = torch.randn_like(x)
        _, vjp_fn = torch.func.vjp(f, x)
        (vjp,) = vjp_fn(u)
        assert torch.allclose((u * jvp).sum(), (vjp * v).sum())
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xr), xr, u, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), xr)
        assert torch.isfinite(h).all() and h.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_runs_in_bfloat16():
    net = randomise(make(patch=(2, 1, 1)), std=0.05)
    x, c, d = inputs(dtype=torch.float32)
    y = net(x, c, date=d)
    net_gpu = net.cuda()
    y_gpu = net_gpu(x.cuda(), c.cuda(), date=d.cuda())
    assert torch.allclose(y_gpu.cpu(), y, atol=1e-3 * y.abs().max().item())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_bf16 = net_gpu(x.cuda(), c.cuda(), date=d.cuda())
    assert torch.allclose(y_bf16.float().cpu(), y, atol=5e-2 * y.abs().max().item())


def test_input_errors():
    net = make()
    x, c, d = inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(B, K, 3, h, w\)"):
        net(x[:, :, :2], c, date=d)
    with pytest.raises(ValueError, match="c_noise must have shape"):
        net(x, c[:1].expand(3), date=d)
    with pytest.raises(ValueError, match="date must have shape"):
        net(x, c, date=d[:, :2])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(width=30, heads=4), "multiple of heads"),
        (dict(width=12, heads=4), "even head size"),
        (dict(patch=(1, 0, 1)), "patch must be three positive ints"),
        (dict(dropout=-0.1), "dropout"),
        (dict(attention="axial"), "attention must be"),
        (dict(depth=0), "must be positive"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        TransformerConfig(**kw)


def test_config_round_trip_and_rotary_split():
    cfg = TransformerConfig(width=96, heads=3, patch=(2, 1, 1), attention="factorised")
    assert from_dict(TransformerConfig, to_dict(cfg)) == cfg
    assert sum(cfg.rotary_pairs) == cfg.head_dim // 2 == 16
    assert cfg.rotary_pairs == (4, 6, 6)


@pytest.mark.parametrize("harmonics", [0, 8])
def test_latitude_is_known_absolutely(harmonics):
    """A uniform input gives a latitude-dependent output only with the latitude embedding.

    Rotary phases are relative: without an absolute latitude signal the network could not tell
    the equator from the poles, whose statistics differ.
    """

    torch.manual_seed(0)
    config = TransformerConfig(in_channels=2, width=16, depth=1, heads=2, patch=(1, 1, 1), embedding=16,
                               latitude_harmonics=harmonics)
    net = SpaceTimeTransformer(config)
    for p in net.parameters():  # leave the zero initialisation, which outputs 0 everywhere
        torch.nn.init.normal_(p, std=0.3)
    x = torch.ones(1, 2, 2, 6, 8)
    with torch.no_grad():
        y = net(x, torch.zeros(1))
    spread_over_rows = (y.mean(dim=-1).amax(dim=-1) - y.mean(dim=-1).amin(dim=-1)).max()
    if harmonics:
        assert spread_over_rows > 1e-2
    else:
        assert spread_over_rows < 1e-5

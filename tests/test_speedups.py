"""Speed-ups (ldm_core/speedups.py): DeepCache's step bookkeeping, the bf16 UNet's float32
interface, what a request names and what ran, recorded in the result and the PNG."""
import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from PIL import Image

from ldm_core import speedups
from ldm_core.catalog import ModelEntry
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError, check_speedups
from ldm_core.speedups import Plan, bf16_unet, deep_cache, plan
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.testing import tiny_cond_unet


def test_a_request_names_speedups_as_a_list_or_a_comma_list_or_none():
    assert check_speedups("bf16, DeepCache") == "bf16,deepcache"
    assert check_speedups(["deepcache"]) == "deepcache"
    assert check_speedups("none") == check_speedups([]) == "none"
    with pytest.raises(RequestError, match="unknown speed-up 'tome'"):
        check_speedups("deepcache,tome")
    with pytest.raises(RequestError, match="comma-separated"):
        check_speedups(3)


def test_bf16_applies_only_on_a_cpu_that_computes_it(monkeypatch):
    entry = ModelEntry(name="m", task="text2img", source="m", pipeline="p", deepcache_interval=4)
    monkeypatch.setattr(speedups, "native_bf16", lambda: True)
    assert plan("bf16,deepcache", entry, torch.device("cpu")) == Plan(deepcache=(4, 0), bf16=True)
    assert plan("bf16,deepcache", entry, torch.device("cuda")) == Plan(deepcache=(4, 0), bf16=False)
    monkeypatch.setattr(speedups, "native_bf16", lambda: False)
    assert plan("bf16", entry, torch.device("cpu")).describe() == "none"
    assert plan("none", entry, torch.device("cpu")) == Plan()


def _counting_mid_block(unet):
    calls = []
    unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: calls.append(1))   # (the block's own call
    # happens on every step: DeepCache's wrapper inside it returns the cached features)
    return calls


@torch.inference_mode()
def test_deepcache_runs_the_deep_blocks_every_interval_and_restores_the_unet():
    unet = tiny_cond_unet().eval()
    calls = _counting_mid_block(unet)
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 32)
    exact = [unet(x, t, ctx).sample for t in (900, 700)]
    calls.clear()
    with deep_cache(unet, 3, 0):
        outs = [unet(x, t, ctx).sample for t in (900, 800, 700, 600, 500, 400, 300)]
        assert len(calls) == 3                          # steps 0, 3 and 6 in full
        assert torch.equal(outs[0], exact[0])           # a full step is the exact UNet
        assert not torch.equal(outs[2], exact[1])       # a cached one is not
        calls.clear()
        unet(x, 950, ctx)                               # a timestep that rises: a new schedule, a full step
        assert len(calls) == 1
    assert all("forward" not in m.__dict__ for m in unet.modules())    # the class's own forward again
    assert torch.equal(unet(x, 700, ctx).sample, exact[1])


@torch.inference_mode()
def test_deepcache_keeps_a_cache_per_tile_of_a_step():
    unet = tiny_cond_unet().eval()
    calls = _counting_mid_block(unet)
    tiles = [torch.randn(1, 4, 8, 8) for _ in range(2)]
    ctx = torch.randn(1, 8, 32)
    ref = {}
    with deep_cache(unet, 2, 0):
        for t in (900, 800):
            for i, x in enumerate(tiles):
                ref[t, i] = unet(x, t, ctx).sample
    assert len(calls) == 2                              # each tile once in full, then from its own cache
    with deep_cache(unet, 2, 0):                        # tile 1 alone: the same as beside tile 0
        outs = [unet(tiles[1], t, ctx).sample for t in (900, 800)]
    assert torch.allclose(outs[1], ref[800, 1])


@torch.inference_mode()
def test_deepcache_runs_a_repeated_timestep_in_full_once():
    unet = tiny_cond_unet().eval()
    calls = _counting_mid_block(unet)
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 32)
    with deep_cache(unet, 3, 0):
        for t in (900, 800, 800, 700, 600, 500):        # PNDM's schedule repeats its second timestep
            unet(x, t, ctx)
    assert len(calls) == 3                              # step 0, the repeat (nothing cached for it), step 3


@torch.inference_mode()
def test_a_bf16_unet_takes_and_returns_float32_and_keeps_the_timestep():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()
    fast = bf16_unet(unet)
    assert fast.dtype == torch.float32 and next(fast.parameters()).dtype == torch.bfloat16
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor(417.37)                            # an Euler sampler's fractional timestep
    seen = []
    fast.time_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    out, ref = fast(x, t).sample, unet(x, t).sample
    assert out.dtype == torch.float32 and seen == [torch.float32]
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert fast.dtype == torch.float32                  # outside its forward again
    assert unet.dtype == torch.float32 and next(unet.parameters()).dtype == torch.float32   # the original kept


def test_the_result_and_the_png_record_the_speedups_that_ran(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(speedups, "native_bf16", lambda: True)
    runs = {sp: stack.run(Text2ImgRequest(prompt="a red circle", seed=5, steps=6, speedups=sp))
            for sp in ("none", "deepcache", "bf16")}
    assert runs["none"].info["speedups"] == "none"
    assert runs["deepcache"].info["speedups"] == "deepcache (interval 3, branch 0)"
    assert runs["bf16"].info["speedups"] == "bf16"
    exact = np.asarray(runs["none"].images[0], dtype=int)
    for sp in ("deepcache", "bf16"):
        assert np.abs(np.asarray(runs[sp].images[0], dtype=int) - exact).max() > 0
    again = stack.run(Text2ImgRequest(prompt="a red circle", seed=5, steps=6, speedups="none"))
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(runs["none"].images[0]))   # nothing left behind
    path = stack.save(runs["deepcache"], tmp_path)[0]
    assert "Speed-ups: deepcache (interval 3, branch 0)" in Image.open(path).text["parameters"]
    assert read_parameters(path)["speedups"] == "deepcache (interval 3, branch 0)"

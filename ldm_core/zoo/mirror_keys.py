"""The original-layout key/shape walk behind ldm_core.zoo.mirror: seeded random tensors under
exactly the key names and shapes the original CompVis modules register, in their order.

Facts are from CompVis/latent-diffusion@a506df5 (abbreviated "@a506df5" below):
  - key names and shapes: ldm/modules/diffusionmodules/openaimodel.py (UNetModel, ResBlock,
    AttentionBlock, Downsample, Upsample), ldm/modules/attention.py (SpatialTransformer,
    BasicTransformerBlock, CrossAttention, FeedForward/GEGLU), ldm/modules/diffusionmodules/model.py
    (Encoder, Decoder, ResnetBlock, AttnBlock, make_attn), ldm/models/autoencoder.py (VQModel,
    AutoencoderKL: quant_conv, post_quant_conv, loss), taming-transformers' VectorQuantizer2
    (`quantize.embedding.weight`) and its LPIPS / PatchGAN discriminator losses.
"""
from __future__ import annotations

import math

import torch


# ------------------------------------------------------------------ random weights, original names
class Weights:
    """Original key -> seeded random tensor, in the order the original modules register them.
    Scaled to keep activations O(1): weights N(0, 1/fan_in), biases N(0, 0.05²), norm scales
    1 + N(0, 0.1²) and shifts N(0, 0.1²) (not 1 and 0, so that a swapped norm shows)."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.sd: dict[str, torch.Tensor] = {}

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen)

    def conv(self, key: str, cin: int, cout: int, k: int = 3, dims: int = 2, bias: bool = True) -> None:
        """A Conv{dims}d(cin, cout, k) (dims=0: a Linear)."""
        self.sd[key + ".weight"] = self.randn(cout, cin, *(k,) * dims) / math.sqrt(cin * k ** dims)
        if bias:
            self.sd[key + ".bias"] = 0.05 * self.randn(cout)

    def linear(self, key: str, cin: int, cout: int, bias: bool = True) -> None:
        self.conv(key, cin, cout, 1, dims=0, bias=bias)

    def norm(self, key: str, c: int) -> None:
        """GroupNorm or LayerNorm (affine)."""
        self.sd[key + ".weight"] = 1 + 0.1 * self.randn(c)
        self.sd[key + ".bias"] = 0.1 * self.randn(c)


def _heads(ch: int, unet: dict) -> tuple[int, int]:
    """(heads, channels per head) of an attention layer at width `ch` (UNetModel.__init__, legacy=True)."""
    num_heads, head_channels = unet.get("num_heads", -1), unet.get("num_head_channels", -1)
    heads = ch // head_channels if head_channels != -1 else num_heads   # num_heads_upsample == num_heads
    return heads, ch // heads


def _res_block(w: Weights, key: str, cin: int, cout: int, emb: int, unet: dict) -> None:
    """openaimodel.ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers (SiLU, Linear),
    out_layers (GroupNorm, SiLU, Dropout, conv), skip_connection (1x1) where widths differ."""
    w.norm(f"{key}.in_layers.0", cin)
    w.conv(f"{key}.in_layers.2", cin, cout)
    w.linear(f"{key}.emb_layers.1", emb, 2 * cout if unet.get("use_scale_shift_norm") else cout)
    w.norm(f"{key}.out_layers.0", cout)
    w.conv(f"{key}.out_layers.3", cout, cout)
    if cin != cout:
        w.conv(f"{key}.skip_connection", cin, cout, 1)


def _attention(w: Weights, key: str, ch: int, unet: dict) -> None:
    """openaimodel.AttentionBlock (norm, qkv and proj_out as 1-d convs), or attention.SpatialTransformer."""
    if not unet.get("use_spatial_transformer"):
        w.norm(f"{key}.norm", ch)
        w.conv(f"{key}.qkv", ch, 3 * ch, 1, dims=1)
        w.conv(f"{key}.proj_out", ch, ch, 1, dims=1)
        return
    heads, head_ch = _heads(ch, unet)
    inner, ctx = heads * head_ch, unet["context_dim"]
    w.norm(f"{key}.norm", ch)
    w.conv(f"{key}.proj_in", ch, inner, 1)
    for d in range(unet.get("transformer_depth", 1)):
        b = f"{key}.transformer_blocks.{d}"
        for attn, kv_dim in (("attn1", inner), ("ff", None), ("attn2", ctx)):
            if attn == "ff":                                    # FeedForward(glu=True): GEGLU, Linear
                w.linear(f"{b}.ff.net.0.proj", inner, inner * 4 * 2)
                w.linear(f"{b}.ff.net.2", inner * 4, inner)
                continue
            w.linear(f"{b}.{attn}.to_q", inner, inner, bias=False)
            w.linear(f"{b}.{attn}.to_k", kv_dim, inner, bias=False)
            w.linear(f"{b}.{attn}.to_v", kv_dim, inner, bias=False)
            w.linear(f"{b}.{attn}.to_out.0", inner, inner)
        for n in (1, 2, 3):
            w.norm(f"{b}.norm{n}", inner)
    w.conv(f"{key}.proj_out", inner, ch, 1)


def unet_keys(w: Weights, pre: str, unet: dict) -> None:
    """openaimodel.UNetModel: time_embed, input_blocks, middle_block, output_blocks, out."""
    mc, mult, nrb = unet["model_channels"], unet["channel_mult"], unet["num_res_blocks"]
    attn_at, updown, emb = unet["attention_resolutions"], unet.get("resblock_updown"), 4 * mc
    if unet.get("num_classes") is not None:
        raise NotImplementedError("label_emb: no zoo config has num_classes")
    w.linear(pre + "time_embed.0", mc, emb)
    w.linear(pre + "time_embed.2", emb, emb)
    w.conv(pre + "input_blocks.0.0", unet["in_channels"], mc)
    chans, ch, ds, i = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            _res_block(w, f"{pre}input_blocks.{i}.0", ch, m * mc, emb, unet)
            ch = m * mc
            if ds in attn_at:
                _attention(w, f"{pre}input_blocks.{i}.1", ch, unet)
            chans.append(ch)
            i += 1
        if level != len(mult) - 1:                               # downsample: a ResBlock(down) or a conv
            if updown:
                _res_block(w, f"{pre}input_blocks.{i}.0", ch, ch, emb, unet)
            else:
                w.conv(f"{pre}input_blocks.{i}.0.op", ch, ch)
            chans.append(ch)
            ds, i = ds * 2, i + 1
    _res_block(w, pre + "middle_block.0", ch, ch, emb, unet)
    _attention(w, pre + "middle_block.1", ch, unet)
    _res_block(w, pre + "middle_block.2", ch, ch, emb, unet)
    i = 0
    for level, m in reversed(list(enumerate(mult))):
        for j in range(nrb + 1):
            _res_block(w, f"{pre}output_blocks.{i}.0", ch + chans.pop(), m * mc, emb, unet)
            ch, k = m * mc, 1
            if ds in attn_at:
                _attention(w, f"{pre}output_blocks.{i}.1", ch, unet)
                k = 2
            if level and j == nrb:                               # upsample: a ResBlock(up) or nearest + conv
                if updown:
                    _res_block(w, f"{pre}output_blocks.{i}.{k}", ch, ch, emb, unet)
                else:
                    w.conv(f"{pre}output_blocks.{i}.{k}.conv", ch, ch)
                ds //= 2
            i += 1
    w.norm(pre + "out.0", ch)
    w.conv(pre + "out.2", mc, unet["out_channels"])


def _resnet(w: Weights, key: str, cin: int, cout: int) -> None:
    """model.ResnetBlock without a timestep (temb_channels=0): norm1, conv1, norm2, conv2, nin_shortcut."""
    w.norm(f"{key}.norm1", cin)
    w.conv(f"{key}.conv1", cin, cout)
    w.norm(f"{key}.norm2", cout)
    w.conv(f"{key}.conv2", cout, cout)
    if cin != cout:
        w.conv(f"{key}.nin_shortcut", cin, cout, 1)


def _attn(w: Weights, key: str, c: int) -> None:
    """model.AttnBlock: norm, q, k, v, proj_out (1x1 convs)."""
    w.norm(f"{key}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        w.conv(f"{key}.{name}", c, c, 1)


def _coders(w: Weights, pre: str, dd: dict) -> None:
    """model.Encoder then model.Decoder (same ddconfig)."""
    ch, mult, nrb, res = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["resolution"]
    levels, attn = len(mult), dd.get("attn_type", "vanilla") != "none"   # "none": nn.Identity, no keys
    has_attn = [attn and res // 2 ** i in dd["attn_resolutions"] for i in range(levels)]
    e = pre + "encoder."
    w.conv(e + "conv_in", dd["in_channels"], ch)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            _resnet(w, f"{e}down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        for j in range(nrb if has_attn[i] else 0):
            _attn(w, f"{e}down.{i}.attn.{j}", cin)
        if i != levels - 1:
            w.conv(f"{e}down.{i}.downsample.conv", cin, cin)
    _mid(w, e + "mid", cin, attn)
    w.norm(e + "norm_out", cin)
    w.conv(e + "conv_out", cin, 2 * dd["z_channels"] if dd["double_z"] else dd["z_channels"])
    d = pre + "decoder."
    w.conv(d + "conv_in", dd["z_channels"], ch * mult[-1])
    _mid(w, d + "mid", ch * mult[-1], attn)
    for i, m in enumerate(mult):                   # up.{i} is level i (the original prepends)
        cin = ch * mult[min(i + 1, levels - 1)]
        for j in range(nrb + 1):
            _resnet(w, f"{d}up.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        for j in range(nrb + 1 if has_attn[i] else 0):
            _attn(w, f"{d}up.{i}.attn.{j}", cin)
        if i != 0:
            w.conv(f"{d}up.{i}.upsample.conv", cin, cin)
    w.norm(d + "norm_out", ch * mult[0])
    w.conv(d + "conv_out", ch * mult[0], dd["out_ch"])


def _mid(w: Weights, key: str, c: int, attn: bool) -> None:
    _resnet(w, key + ".block_1", c, c)
    if attn:
        _attn(w, key + ".attn_1", c)
    _resnet(w, key + ".block_2", c, c)


def _loss(w: Weights, target: str) -> None:
    """A few representative keys of the first stages' training losses (taming's LPIPS + PatchGAN
    discriminator; LPIPSWithDiscriminator adds `logvar`), real shapes."""
    if target.endswith("LPIPSWithDiscriminator") and "vqperceptual" not in target:
        w.sd["loss.logvar"] = torch.zeros(())
    w.sd["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    w.sd["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    w.conv("loss.perceptual_loss.net.slice1.0", 3, 64)
    w.conv("loss.perceptual_loss.lin0.model.1", 64, 1, 1, bias=False)
    w.conv("loss.discriminator.main.0", 3, 64, 4)
    w.conv("loss.discriminator.main.2", 64, 128, 4, bias=False)
    w.norm("loss.discriminator.main.3", 128)                                 # BatchNorm2d
    w.sd["loss.discriminator.main.3.running_mean"] = torch.zeros(128)
    w.sd["loss.discriminator.main.3.running_var"] = torch.ones(128)
    w.sd["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(1000)


def first_stage_keys(w: Weights, pre: str, params: dict, target: str, with_loss: bool) -> None:
    """VQModel / VQModelInterface / AutoencoderKL: encoder, decoder, loss, quantize, quant_conv, post_quant_conv."""
    dd, embed = params["ddconfig"], params["embed_dim"]
    _coders(w, pre, dd)
    if with_loss:
        _loss(w, params["lossconfig"]["target"])
    kl = target.endswith("AutoencoderKL")
    if not kl:
        w.sd[pre + "quantize.embedding.weight"] = w.randn(params["n_embed"], embed)
    w.conv(pre + "quant_conv", 2 * dd["z_channels"] if kl else dd["z_channels"], 2 * embed if kl else embed, 1)
    w.conv(pre + "post_quant_conv", embed, dd["z_channels"], 1)

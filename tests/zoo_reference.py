"""An independent functional reference of the paper's ORIGINAL networks, run straight from an
original-layout state dict (CompVis/latent-diffusion@a506df5 key names) with torch.nn.functional:
the yardstick that converted diffusers models are compared against (tests/test_zoo_mirror.py).

Written from the semantics of the original modules (not a copy):
  - openaimodel.UNetModel: timestep embedding [cos, sin], ResBlock (scale-shift norm, ResBlock
    up/down), AttentionBlock with the legacy head order (heads split before q/k/v), Downsample
    (3x3 stride-2 conv, padding 1), Upsample (nearest x2 + conv); GroupNorm(32, eps 1e-5);
  - attention.SpatialTransformer: GroupNorm(32, eps 1e-6), proj_in, blocks of self-attention,
    cross-attention on the context, GEGLU feed-forward (LayerNorm before each), proj_out;
  - model.Encoder/Decoder (taming): ResnetBlock, AttnBlock, Downsample (pad right/bottom, stride 2),
    nearest Upsample; GroupNorm(32, eps 1e-6);
  - VQ: the nearest codebook entry; KL: the posterior's mode (its mean);
  - ClassEmbedder: embedding(labels[:, None]) -> (B, 1, D);
  - BERTEmbedder (x_transformer.py TransformerWrapper + Encoder): token + absolute position
    embeddings, pre-norm layers of self-attention (8 heads of 64, no mask) and GELU feed-forward, LayerNorm.
Configs are the `model.params` dicts of the original config files.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

UNET = "model.diffusion_model."
FIRST = "first_stage_model."


def _conv(sd, key, x, stride=1, padding=None):
    w = sd[key + ".weight"]
    conv = {3: F.conv1d, 4: F.conv2d}[w.dim()]
    return conv(x, w, sd.get(key + ".bias"), stride, w.shape[-1] // 2 if padding is None else padding)


def _linear(sd, key, x):
    return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias"))


def _gn(sd, key, x, eps):
    return F.group_norm(x, 32, sd[key + ".weight"], sd[key + ".bias"], eps)


def _ln(sd, key, x):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], 1e-5)


def _attend(q, k, v, heads):
    """Softmax(q k^T / sqrt(d)) v over heads; q (B, N, H*d), k and v (B, M, H*d) -> (B, N, H*d)."""
    B, N, _ = q.shape
    q, k, v = (t.reshape(B, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))   # (B, H, *, d)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).reshape(B, N, -1)


# ------------------------------------------------------------------ the diffusion UNet
def timestep_embedding(t, dim):
    """(B,) -> (B, dim): [cos(t f), sin(t f)], f = 10000^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _res(sd, key, x, emb, scale_shift, updown=None):
    """ResBlock: (B, Cin, H, W) -> (B, Cout, H', W')."""
    h = F.silu(_gn(sd, key + ".in_layers.0", x, 1e-5))
    if updown == "down":
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    elif updown == "up":
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    h = _conv(sd, key + ".in_layers.2", h)
    e = _linear(sd, key + ".emb_layers.1", F.silu(emb))[:, :, None, None]
    if scale_shift:
        scale, shift = e.chunk(2, dim=1)
        h = _gn(sd, key + ".out_layers.0", h, 1e-5) * (1 + scale) + shift
    else:
        h = _gn(sd, key + ".out_layers.0", h + e, 1e-5)
    h = _conv(sd, key + ".out_layers.3", F.silu(h))
    return (x if x.shape[1] == h.shape[1] else _conv(sd, key + ".skip_connection", x)) + h


def _attention_block(sd, key, x, heads):
    """AttentionBlock, legacy order: qkv (B, 3C, T) viewed as (B*heads, 3*C/heads, T), then split q, k, v."""
    B, C, H, W = x.shape
    xf = x.reshape(B, C, H * W)
    qkv = _conv(sd, key + ".qkv", _gn(sd, key + ".norm", xf, 1e-5))                  # (B, 3C, T)
    q, k, v = qkv.reshape(B * heads, 3 * C // heads, H * W).split(C // heads, dim=1)   # (B*heads, d, T) each
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(C // heads), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(B, C, H * W)
    return (xf + _conv(sd, key + ".proj_out", a)).reshape(B, C, H, W)


def _cross_attention(sd, key, x, context, heads):
    c = x if context is None else context
    q, k, v = (_linear(sd, f"{key}.to_{n}", t) for n, t in (("q", x), ("k", c), ("v", c)))
    return _linear(sd, key + ".to_out.0", _attend(q, k, v, heads))


def _spatial_transformer(sd, key, x, context, heads, depth):
    """SpatialTransformer: (B, C, H, W), context (B, M, D) -> (B, C, H, W)."""
    B, C, H, W = x.shape
    h = _conv(sd, key + ".proj_in", _gn(sd, key + ".norm", x, 1e-6))
    h = h.flatten(2).transpose(1, 2)                                                    # (B, HW, inner)
    for d in range(depth):
        b = f"{key}.transformer_blocks.{d}"
        h = h + _cross_attention(sd, b + ".attn1", _ln(sd, b + ".norm1", h), None, heads)
        h = h + _cross_attention(sd, b + ".attn2", _ln(sd, b + ".norm2", h), context, heads)
        a, gate = _linear(sd, b + ".ff.net.0.proj", _ln(sd, b + ".norm3", h)).chunk(2, dim=-1)
        h = h + _linear(sd, b + ".ff.net.2", a * F.gelu(gate))
    h = h.transpose(1, 2).reshape(B, -1, H, W)
    return _conv(sd, key + ".proj_out", h) + x


def _unet_plan(u):
    """The layers of each input block, the middle block and each output block, as (kind, arg)."""
    mc, mult, nrb, attn_at = u["model_channels"], u["channel_mult"], u["num_res_blocks"], u["attention_resolutions"]
    updown = u.get("resblock_updown", False)

    def attn(ch):
        heads = ch // u["num_head_channels"] if u.get("num_head_channels", -1) != -1 else u["num_heads"]
        return ("transformer" if u.get("use_spatial_transformer") else "attention", heads)

    inputs, ds = [[("conv", None)]], 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            inputs.append([("res", None)] + ([attn(m * mc)] if ds in attn_at else []))
        if level != len(mult) - 1:
            inputs.append([("res", "down")] if updown else [("down", None)])
            ds *= 2
    middle = [("res", None), attn(mult[-1] * mc), ("res", None)]
    outputs = []
    for level, m in reversed(list(enumerate(mult))):
        for j in range(nrb + 1):
            layers = [("res", None)] + ([attn(m * mc)] if ds in attn_at else [])
            if level and j == nrb:
                layers.append(("res", "up") if updown else ("up", None))
                ds //= 2
            outputs.append(layers)
    return inputs, middle, outputs


def unet_forward(sd, unet, x, t, context=None, prefix=UNET):
    """The original UNet's eps: x (B, C, H, W), t (B,), context (B, M, D) or None -> (B, C_out, H, W)."""
    p = prefix
    emb = timestep_embedding(t, unet["model_channels"])
    emb = _linear(sd, p + "time_embed.2", F.silu(_linear(sd, p + "time_embed.0", emb)))   # (B, 4 mc)
    ss, depth = unet.get("use_scale_shift_norm", False), unet.get("transformer_depth", 1)

    def block(key, h, layers):
        for i, (kind, arg) in enumerate(layers):
            k = f"{key}.{i}"
            if kind == "conv":
                h = _conv(sd, k, h)
            elif kind == "res":
                h = _res(sd, k, h, emb, ss, arg)
            elif kind == "attention":
                h = _attention_block(sd, k, h, arg)
            elif kind == "transformer":
                h = _spatial_transformer(sd, k, h, context, arg, depth)
            elif kind == "down":
                h = _conv(sd, k + ".op", h, stride=2, padding=1)
            else:
                h = _conv(sd, k + ".conv", F.interpolate(h, scale_factor=2, mode="nearest"))
        return h

    inputs, middle, outputs = _unet_plan(unet)
    hs, h = [], x
    for i, layers in enumerate(inputs):
        h = block(f"{p}input_blocks.{i}", h, layers)
        hs.append(h)
    h = block(p + "middle_block", h, middle)
    for i, layers in enumerate(outputs):
        h = block(f"{p}output_blocks.{i}", torch.cat([h, hs.pop()], dim=1), layers)
    return _conv(sd, p + "out.2", F.silu(_gn(sd, p + "out.0", h, 1e-5)))


def ema_view(sd):
    """The state dict with the UNet's weights replaced by their EMA shadows (LitEma: `model_ema.`
    + the name under `model.` without dots)."""
    out = dict(sd)
    for k in sd:
        if k.startswith(UNET):
            out[k] = sd["model_ema." + k[len("model."):].replace(".", "")]
    return out


# ------------------------------------------------------------------ the first stage (taming Encoder/Decoder)
def _resnet(sd, key, x):
    h = _conv(sd, key + ".conv1", F.silu(_gn(sd, key + ".norm1", x, 1e-6)))
    h = _conv(sd, key + ".conv2", F.silu(_gn(sd, key + ".norm2", h, 1e-6)))
    return (x if x.shape[1] == h.shape[1] else _conv(sd, key + ".nin_shortcut", x)) + h


def _attn(sd, key, x):
    """AttnBlock: single-head self-attention over the H*W positions."""
    B, C, H, W = x.shape
    h = _gn(sd, key + ".norm", x, 1e-6)
    q, k, v = (_conv(sd, f"{key}.{n}", h).flatten(2).transpose(1, 2) for n in "qkv")    # (B, HW, C)
    a = _attend(q, k, v, 1).transpose(1, 2).reshape(B, C, H, W)
    return x + _conv(sd, key + ".proj_out", a)


def _has_attn(dd):
    on = dd.get("attn_type", "vanilla") != "none"
    return on, [on and dd["resolution"] // 2 ** i in dd["attn_resolutions"] for i in range(len(dd["ch_mult"]))]


def _mid(sd, key, h, on):
    h = _resnet(sd, key + ".block_1", h)
    return _resnet(sd, key + ".block_2", _attn(sd, key + ".attn_1", h) if on else h)


def encoder(sd, dd, x, prefix=""):
    """Encoder: image (B, 3, H, W) -> moments (B, z or 2z, H/f, W/f)."""
    on, at = _has_attn(dd)
    h, e = _conv(sd, prefix + "encoder.conv_in", x), prefix + "encoder."
    for i in range(len(dd["ch_mult"])):
        for j in range(dd["num_res_blocks"]):
            h = _resnet(sd, f"{e}down.{i}.block.{j}", h)
            h = _attn(sd, f"{e}down.{i}.attn.{j}", h) if at[i] else h
        if i != len(dd["ch_mult"]) - 1:
            h = _conv(sd, f"{e}down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = _mid(sd, e + "mid", h, on)
    return _conv(sd, e + "conv_out", F.silu(_gn(sd, e + "norm_out", h, 1e-6)))


def decoder(sd, dd, z, prefix=""):
    """Decoder: z (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f)."""
    on, at = _has_attn(dd)
    d = prefix + "decoder."
    h = _mid(sd, d + "mid", _conv(sd, d + "conv_in", z), on)
    for i in reversed(range(len(dd["ch_mult"]))):
        for j in range(dd["num_res_blocks"] + 1):
            h = _resnet(sd, f"{d}up.{i}.block.{j}", h)
            h = _attn(sd, f"{d}up.{i}.attn.{j}", h) if at[i] else h
        if i != 0:
            h = _conv(sd, f"{d}up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv(sd, d + "conv_out", F.silu(_gn(sd, d + "norm_out", h, 1e-6)))


def quantize(sd, h, prefix=""):
    """VQ: each position's vector (B, D, H, W) -> its nearest codebook entry (squared distance)."""
    codebook = sd[prefix + "quantize.embedding.weight"]                                  # (N, D)
    B, D, H, W = h.shape
    flat = h.permute(0, 2, 3, 1).reshape(-1, D)
    dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None] - 2 * flat @ codebook.T
    return codebook[dist.argmin(1)].reshape(B, H, W, D).permute(0, 3, 1, 2)


def is_kl(first_params):
    return "n_embed" not in first_params


def encode(sd, first, x, prefix=""):
    """The latent of an image: KL: the posterior's mode; VQ: the pre-quantisation vector (VQModelInterface.encode)."""
    moments = _conv(sd, prefix + "quant_conv", encoder(sd, first["ddconfig"], x, prefix))
    return moments.chunk(2, dim=1)[0] if is_kl(first) else moments


def decode(sd, first, z, prefix="", force_not_quantize=False):
    """A latent (B, embed_dim, h, w) -> image: VQ quantises first (VQModelInterface.decode, as
    LatentDiffusion.decode_first_stage does) unless told not to; post_quant_conv; Decoder."""
    if not is_kl(first) and not force_not_quantize:
        z = quantize(sd, z, prefix)
    return decoder(sd, first["ddconfig"], _conv(sd, prefix + "post_quant_conv", z), prefix)


def class_embedding(sd, labels, prefix="cond_stage_model."):
    """ClassEmbedder: (B,) labels -> (B, 1, D) cross-attention context."""
    return F.embedding(labels[:, None], sd[prefix + "embedding.weight"])


def bert_forward(sd, n_layer, tokens, prefix="cond_stage_model.transformer."):
    """BERTEmbedder on token ids (B, N) -> (B, N, n_embed) (`return_embeddings=True`: no to_logits)."""
    p = prefix
    x = F.embedding(tokens, sd[p + "token_emb.weight"]) + sd[p + "pos_emb.emb.weight"][:tokens.shape[1]]
    for i in range(n_layer):
        a, f = f"{p}attn_layers.layers.{2 * i}", f"{p}attn_layers.layers.{2 * i + 1}"
        h = _ln(sd, a + ".0", x)
        q, k, v = (F.linear(h, sd[f"{a}.1.to_{n}.weight"]) for n in "qkv")     # no bias; (B, N, 8 * 64)
        x = x + _linear(sd, a + ".1.to_out", _attend(q, k, v, 8))
        x = x + _linear(sd, f + ".1.net.2", F.gelu(_linear(sd, f + ".1.net.0.0", _ln(sd, f + ".0", x))))
    return _ln(sd, p + "norm", x)

"""Autoencoder losses (paper §3.1): reconstruction, perceptual, patch adversarial, KL.

No pretrained network can be downloaded where this project is built, so the default
perceptual term is *structural*: multi-scale SSIM plus an L1 on Sobel gradients.
Both compare local structure (edges, contrast) rather than raw pixel values, which is
what LPIPS is used for in the paper's autoencoder: it stops the L1-trained decoder
from blurring edges. When a user has LPIPS (VGG16) weights in a local safetensors
file, `LPIPS.from_file` loads them and replaces the structural term.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1], (B, C, H, W)."""
    a = (a + 1) / 2
    b = (b + 1) / 2
    c = a.shape[1]
    w = _gaussian_window(window, device=a.device).to(a.dtype).expand(c, 1, -1, -1)
    pad = window // 2
    mu_a = F.conv2d(F.pad(a, [pad] * 4, mode="reflect"), w, groups=c)
    mu_b = F.conv2d(F.pad(b, [pad] * 4, mode="reflect"), w, groups=c)
    saa = F.conv2d(F.pad(a * a, [pad] * 4, mode="reflect"), w, groups=c) - mu_a ** 2
    sbb = F.conv2d(F.pad(b * b, [pad] * 4, mode="reflect"), w, groups=c) - mu_b ** 2
    sab = F.conv2d(F.pad(a * b, [pad] * 4, mode="reflect"), w, groups=c) - mu_a * mu_b
    c1 = 0.01 ** 2
    c2 = 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean()


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradients (B, 2C, H, W)."""
    k = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype, device=x.device) / 4
    c = x.shape[1]
    kx = k.expand(c, 1, 3, 3)
    ky = k.t().expand(c, 1, 3, 3)
    xp = F.pad(x, [1] * 4, mode="replicate")
    return torch.cat([F.conv2d(xp, kx, groups=c), F.conv2d(xp, ky, groups=c)], 1)


class StructuralLoss(nn.Module):
    """Offline perceptual stand-in: (1 - SSIM) at 2 scales + L1 of Sobel gradients."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = (1 - ssim(x, y)) + (1 - ssim(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)))
        return loss + F.l1_loss(sobel(x), sobel(y))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`


class LPIPS(nn.Module):
    """LPIPS (VGG16 variant) for users who have its weights locally.

    Expected keys in the safetensors file: VGG16 `features.{i}.weight/bias` (torchvision
    numbering) and `lin{k}.model.1.weight` (the LPIPS 1x1 heads, k = 0..4).
    """

    def __init__(self):
        super().__init__()
        layers = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        chans = (64, 128, 256, 512, 512)
        self.lins = nn.ModuleList(nn.Sequential(nn.Dropout(), nn.Conv2d(ch, 1, 1, bias=False)) for ch in chans)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str) -> "LPIPS":
        sd = load_file(path)
        sd = {(f"lins.{k[3]}.1.weight" if k.startswith("lin") else k): v for k, v in sd.items()}
        m = cls()
        m.load_state_dict(sd, strict=False)
        return m.eval()

    def _taps(self, x):
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _LPIPS_TAPS:
                out.append(x)
        return out

    def forward(self, x, y):
        fx = self._taps((x - self.shift) / self.scale)
        fy = self._taps((y - self.shift) / self.scale)
        total = 0.0
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + lin((a - b) ** 2).mean()
        return total


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming NLayerDiscriminator): one logit per overlapping patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 2):
        super().__init__()
        layers = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers + 1):
            c_out = channels * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, 3, H, W) -> (B, 1, h, w) patch logits
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """Balance the adversarial gradient against the reconstruction gradient at the decoder's
    last layer (Esser et al., taming transformers), as the paper's autoencoder does."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, max_weight).detach()

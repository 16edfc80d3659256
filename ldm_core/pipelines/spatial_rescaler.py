"""The semantic-synthesis conditioning stage (paper §4.3.2): a label map, one-hot, resized to the
latent grid and mapped to a few channels that are concatenated to the noisy latent.

As CompVis/latent-diffusion@a506df5 `ldm/modules/encoders/modules.py` SpatialRescaler (read, not
copied): `n_stages` interpolations by `multiplier` (bilinear, 0.5: a 256² map -> 64²), then a 1x1
convolution from the classes to `out_channels` (no bias). The semantic_synthesis256/512 configs:
n_stages 2, 182 classes (COCO-Stuff's labels, one channel per label id) -> 3 channels. The class
names and the colour each is painted in are part of this component's config, so a converted or
built-in model carries its own palette.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

METHODS = ("nearest", "bilinear", "bicubic", "area")


class SpatialRescaler(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, n_stages: int = 1, method: str = "bilinear", multiplier: float = 0.5,
                 in_channels: int = 3, out_channels: int | None = None, bias: bool = False,
                 class_names: list[str] | None = None, palette: list[list[int]] | None = None):
        super().__init__()
        if n_stages < 0 or method not in METHODS:
            raise ValueError(f"n_stages must be >= 0 and method one of {METHODS}")
        if class_names is not None and len(class_names) != in_channels:
            raise ValueError(f"{len(class_names)} class names for {in_channels} input channels")
        if palette is not None and len(palette) != in_channels:
            raise ValueError(f"{len(palette)} palette colours for {in_channels} input channels")
        self.channel_mapper = (torch.nn.Conv2d(in_channels, out_channels, 1, bias=bias)
                               if out_channels is not None else None)

    @property
    def n_classes(self) -> int:
        return self.config.in_channels

    @property
    def factor(self) -> int:
        """How much smaller the output grid is than the map (4 for two stages of 0.5)."""
        return round((1 / self.config.multiplier) ** self.config.n_stages)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class ids -> (B, classes, H, W) float one-hot (the map the model was trained on)."""
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"label ids must be in 0..{self.n_classes - 1}")
        return F.one_hot(labels.long(), self.n_classes).permute(0, 3, 1, 2).to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, classes, H, W) -> (B, out, H/f, W/f)
        for _ in range(self.config.n_stages):
            kw = {"align_corners": False} if self.config.method in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, scale_factor=self.config.multiplier, mode=self.config.method, **kw)
        return self.channel_mapper(x) if self.channel_mapper is not None else x

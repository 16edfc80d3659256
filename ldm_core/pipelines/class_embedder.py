"""The class embedder of the paper's class-conditional models (§4.1): a class index -> one
context token for the UNet's cross-attention, as `ldm.modules.encoders.modules.ClassEmbedder`
does (`embedding(c[:, None])`, shape (B, 1, D)). A diffusers-style component (config +
safetensors), so a model folder names it in its model_index.json as ["ldm_core", "ClassEmbedder"].

`class_names` travel with the weights (ImageNet's 1000 for the cin models, the object kinds for
the built-in model). `null_class`: the index trained as "no class" (cin256-v2: 1000 of 1001),
which classifier-free guidance uses as its unconditional branch; None when the model has none.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class ClassEmbedder(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, n_classes: int = 1000, embed_dim: int = 512, class_names: list[str] | None = None,
                 null_class: int | None = None):
        super().__init__()
        if class_names is not None and len(class_names) not in (n_classes, n_classes - (null_class is not None)):
            raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
        if null_class is not None and not 0 <= null_class < n_classes:
            raise ValueError(f"null_class {null_class} is not one of the {n_classes} classes")
        self.embedding = torch.nn.Embedding(n_classes, embed_dim)

    @property
    def num_named_classes(self) -> int:
        """Classes a user may ask for (the null class excluded)."""
        return self.config.n_classes - (self.config.null_class is not None)

    def name_of(self, index: int) -> str:
        names = self.config.class_names
        return names[index] if names and index < len(names) else f"class {index}"

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels[:, None])       # (B,) -> (B, 1, D)

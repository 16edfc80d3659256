"""What a task module declares (`TASK = Task(...)`), and the example input the benchmarks share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Task:
    name: str                     # "text2img": the catalog's task, the API's endpoint, the CLI's command
    title: str                    # "Text → Image": the tab
    order: int                    # tab and listing order
    request: type                 # the request dataclass
    check: Callable               # (request with sampling checked, entry, limits) -> {field: checked value}
    call: Callable                # (pipeline, checked request, seeds, callback) -> PipelineOutput
    info: Callable                # (checked request) -> the task's own parameters, for the result's info
    output_size: Callable         # (checked request) -> (width, height, samples per image): the work done
    pipelines: dict[str, type]    # {class name: pipeline class} that may run it (a catalog entry's `pipeline`)
    example: Callable             # (output side in pixels) -> {field: value}: a typical request's own fields
    positional: tuple[str, ...] = ()   # CLI: fields given as positional arguments
    api: tuple[str, ...] = ()     # API: the endpoint's parameters, in the contract's order (docs/api.md)
    api_defaults: dict[str, Any] | None = None  # API: a parameter's default where the dataclass's is None
                                  # (None here: unset, so the chosen model's own default applies)
    returns_one: bool = False     # API: one image back (super-resolution), not a gallery
    scale: int = 1                # output side / input image side (super-resolution: 4)
    help: str = ""
    work_factor: str = "samples averaged"   # what output_size's third number counts (budget messages)
    image_info: Callable | None = None   # (checked request, i) -> what image i has of its own (its class)

    @property
    def takes_image(self) -> bool:
        """Whether a request carries an input image ("send to" offers this task)."""
        return "image" in self.request.__dataclass_fields__

    def example_request(self, side: int, **sampling):
        """A typical request whose output is `side` pixels square (benchmarks, smoke runs)."""
        return self.request(**self.example(side // self.scale), **sampling)


def example_scene(side: int) -> tuple[Image.Image, Image.Image]:
    """A Shapes-World-like picture (a red circle, a blue square) and a mask over the square."""
    image = Image.new("RGB", (side, side), (235, 235, 225))
    pen = ImageDraw.Draw(image)
    s = side / 64
    pen.ellipse([8 * s, 20 * s, 28 * s, 40 * s], fill=(220, 40, 40))
    pen.rectangle([38 * s, 22 * s, 56 * s, 40 * s], fill=(40, 60, 220))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rectangle([34 * s, 18 * s, 60 * s, 44 * s], fill=255)
    return image, mask

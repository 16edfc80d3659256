"""Class -> Image tab (paper §4.1): classes picked from the model's searchable list (ImageNet's
1000 for the paper's cin256 models, Shapes World's 24 object kinds for the built-in one), some
images of each."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.catalog import CatalogError
from ldm_core.service import Service
from ldm_core.tasks.class2img import Class2ImgRequest, class_names

from .common import Form, buttons, results, standalone, wire
from .controls import SamplingControls, model_defaults, sampling_controls
from .panels import add_panels
from .unconditional import ETA_INFO

NO_GUIDANCE = "this model was trained without a null class: no classifier-free guidance"


@dataclass
class Class2ImgTab:
    classes: gr.Dropdown
    controls: SamplingControls
    eta: gr.Slider
    gallery: gr.Gallery

    convert = {"class_name": lambda v: [c.strip() for c in str(v).split(";") if c.strip()]}

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's and History's "reuse"), by info key."""
        return {"class_name": self.classes, **self.controls.params(), "eta": self.eta}


def make_request(values: dict) -> Class2ImgRequest:
    """The request: the picked classes, `num_images` of each (images cycle through the classes)."""
    picked = values.pop("class_name") or []
    picked = [picked] if isinstance(picked, (str, int)) else list(picked)
    per_class = int(values.pop("num_images") or 1)
    return Class2ImgRequest(class_name=picked, num_images=per_class * max(1, len(picked)), **values)


def class_choices(studio: Service, name: str | None) -> list[str]:
    try:
        return list(class_names(studio.entry("class2img", name)))
    except CatalogError:
        return []


def follow_classes(studio: Service, name: str):
    """A new model: its class list (the picks it knows kept), and guidance only where it was trained for it."""
    try:
        entry = studio.entry("class2img", name)
    except CatalogError:
        return gr.skip(), gr.skip()
    names = list(class_names(entry))
    return (gr.update(choices=names, value=[], info=f"{len(names)} classes: type to search"),
            gr.update(interactive=entry.guided, info=None if entry.guided else NO_GUIDANCE))


def build(studio: Service) -> Class2ImgTab:
    entry = studio.entry("class2img")
    names = class_choices(studio, entry.name)
    with gr.Row():
        with gr.Column(scale=2):
            classes = gr.Dropdown(names, value=names[:1], multiselect=True, filterable=True, label="Classes",
                                  info=f"{len(names)} classes: type to search", elem_id="c2i-classes")
            generate, stop = buttons("c2i")
            controls = sampling_controls(studio, "class2img")
            controls.num_images.label = "Images per class"
            eta = gr.Slider(0, 1, value=entry.eta, step=0.05, label="DDIM eta", info=ETA_INFO, elem_id="c2i-eta")
            settings = gr.Column()
        with gr.Column(scale=3):
            shown = results("c2i")
    inputs = {"class_name": classes, **controls.inputs(), "eta": eta}
    with settings:
        add_panels(studio, Form("class2img", inputs, make_request, shown, stop))   # the x/y plot
    wire(studio, generate, stop, inputs, make_request, shown)
    targets = {n: c for n, c in controls.params().items() if n not in ("seed", "model")}
    targets["eta"] = eta
    controls.model.change(lambda name: model_defaults(studio, "class2img", name, targets), controls.model,
                          list(targets.values()), api_visibility="private")
    controls.model.change(lambda name: follow_classes(studio, name), controls.model,
                          [classes, controls.guidance_scale], api_visibility="private")
    return Class2ImgTab(classes, controls, eta, shown.gallery)


if __name__ == "__main__":
    standalone(build, "Class → Image")

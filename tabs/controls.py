"""The controls tabs share: sampling settings, model defaults, filling controls in from a
result's info, and reading a gallery's selection."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from ldm_core.catalog import CatalogError, ModelEntry
from ldm_core.options import MODEL_DEFAULT, SAMPLER_NAMES, SPEEDUP_NAMES
from ldm_core.service import Service


@dataclass
class SamplingControls:
    steps: gr.Slider
    guidance_scale: gr.Slider
    seed: gr.Number
    num_images: gr.Slider
    width: gr.Slider | None
    height: gr.Slider | None
    sampler: gr.Dropdown
    model: gr.Dropdown
    speedups: gr.CheckboxGroup

    def params(self) -> dict:
        """The controls a result's info fills in, by request field name (those that exist)."""
        names = ("steps", "guidance_scale", "seed", "width", "height", "sampler", "model", "speedups")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def inputs(self) -> dict:
        """The controls a request reads, by request field name, in the request's field order."""
        names = ("steps", "guidance_scale", "seed", "num_images", "width", "height", "sampler", "model", "speedups")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def follow_model(self, studio: Service, task: str) -> None:
        """A new model choice sets its defaults (steps, guidance, sampler, size) in the controls."""
        targets = {n: c for n, c in self.params().items() if n not in ("seed", "model")}
        # on the user's pick only (`input`): a model set by Reuse or a preset comes with its own settings
        self.model.input(lambda name: model_defaults(studio, task, name, targets), self.model,
                         list(targets.values()), api_visibility="private")


def info_updates(params: dict, info: dict, convert: dict | None = None) -> list:
    """One update per named control, in `params`' order, from a result's info: its value
    (through `convert[name]` when given), or left as it is when the info has none."""
    size = str(info.get("size", "")).split("x")
    if len(size) == 2 and all(v.isdigit() for v in size):
        info = {"width": int(size[0]), "height": int(size[1]), **info}
    convert = {"speedups": speedup_names, **(convert or {})}
    return [convert.get(n, lambda v: v)(info[n]) if n in info else gr.skip() for n in params]


def sampling_controls(studio: Service, task: str, size: bool = True, guidance: bool = True,
                      batch: bool = True) -> SamplingControls:
    entry = studio.entry(task)
    lim = studio.limits
    model = gr.Dropdown(studio.choices(task), value=entry.name, label="Model", elem_id=f"{task}-model",
                        info="built-in models run offline; a hub model says if it is ready, will download, or cannot")
    with gr.Row():
        steps = gr.Slider(lim.min_steps, steps_maximum(lim, entry), value=entry.steps, step=1, label="Steps",
                          elem_id=f"{task}-steps")
        sampler = gr.Dropdown(sampler_choices(studio, entry), value=entry.sampler, label="Sampler")
    with gr.Row():
        guidance_scale = gr.Slider(0, 15, value=entry.guidance, step=0.5, label="Guidance scale", visible=guidance)
        seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", minimum=-1, maximum=lim.max_seed)
    with gr.Row(visible=batch):
        num_images = gr.Slider(1, lim.max_images, value=1, step=1, label="Images")
    width = height = None
    if size:
        with gr.Row():
            width = gr.Slider(lim.min_side, 512, value=entry.width, step=8, label="Width", elem_id=f"{task}-width")
            height = gr.Slider(lim.min_side, 512, value=entry.height, step=8, label="Height",
                               elem_id=f"{task}-height")
        if task not in GROWS_BEYOND_NATIVE:
            size_hint(studio, task, width, height, model)
        size_presets(studio, task, width, height, model)
    speedups = speedup_controls(entry, f"{task}-speedups")
    return SamplingControls(steps, guidance_scale, seed, num_images, width, height, sampler, model, speedups)


# tasks whose models draw well past their training size (the paper's §4.3.2: semantic synthesis runs
# convolutionally at 1024 px after 256 px training); the others get a hint beyond their native size
GROWS_BEYOND_NATIVE = ("semantic2img",)


def size_texts(entry: ModelEntry, hires: bool) -> dict:
    """The size line's three texts for a model: at, past ({size} filled in by the page) and below its
    native size."""
    native = f"{entry.width}×{entry.height}"
    bigger = (f"generate at {native} and tick **Hires** (4× super-resolution)" if hires
              else f"generate at {native}, then enlarge it in the Super-resolution tab")
    return {"w": entry.width, "h": entry.height, "native": f"Native size of this model: **{native}**.",
            "past": f"⚠ This model was trained at **{native}**: at {{size}} it repeats and distorts its shapes "
                    f"across the canvas. For a bigger picture, {bigger}.",
            "below": f"⚠ This model was trained at **{native}**: below it, shapes come out broken or cut."}


# picks the model's text for the sizes in the sliders, in the page itself: a server event would get every
# key typed in a number box, and Gradio refuses an intermediate value ("2" on the way to "256") with a toast
_SIZE_JS = """(w, h, name) => { const t = %s[name]; if (!t) return "";
  if (w == t.w && h == t.h) return t.native;
  return (w > t.w || h > t.h) ? t.past.replace("{size}", `${w}×${h}`) : t.below; }"""


def size_hint(studio: Service, task: str, width: gr.Slider, height: gr.Slider, model: gr.Dropdown) -> gr.Markdown:
    """A line under the size sliders: the model's native size, and what a size beyond it does."""
    hires = any(c.name == "hires" for c in studio.compositions(task))
    texts = {}
    for _, name in studio.choices(task):
        try:
            texts[name] = size_texts(studio.entry(task, name), hires)
        except CatalogError:
            continue
    hint = gr.Markdown(texts.get(studio.entry(task).name, {}).get("native", ""), elem_id=f"{task}-size-hint")
    for control in (width, height, model):
        control.change(None, [width, height, model], hint, js=_SIZE_JS % json.dumps(texts),
                       api_visibility="private", queue=False)
    return hint


ASPECTS = (("square", 1, 1), ("landscape 4:3", 4, 3), ("portrait 3:4", 3, 4), ("wide 16:9", 16, 9),
           ("tall 9:16", 9, 16))


def size_choices(entry: ModelEntry, max_side: int = 512) -> list[tuple[str, str]]:
    """A model's size presets, (label, "WxH"): its native size, the common aspects at the same area
    (sides in steps of 8), and twice the native size where the sliders reach."""
    area = entry.width * entry.height
    out = [(f"native {entry.width}×{entry.height}", f"{entry.width}x{entry.height}")]
    for label, a, b in ASPECTS[1:]:
        w = max(8, round((area * a / b) ** 0.5 / 8) * 8)
        h = max(8, round((area * b / a) ** 0.5 / 8) * 8)
        if max(w, h) <= max_side:
            out.append((f"{label}: {w}×{h}", f"{w}x{h}"))
    if 2 * max(entry.width, entry.height) <= max_side:
        out.append((f"2× native {2 * entry.width}×{2 * entry.height} (past its size)",
                    f"{2 * entry.width}x{2 * entry.height}"))
    return out


def size_presets(studio: Service, task: str, width: gr.Slider, height: gr.Slider, model: gr.Dropdown) -> gr.Dropdown:
    """A dropdown of the model's size presets that sets both sliders."""
    entry = studio.entry(task)
    presets = gr.Dropdown(size_choices(entry), value=None, label="Size preset", elem_id=f"{task}-size-preset")

    def chosen(value):
        w, h = (int(v) for v in value.split("x"))
        return w, h

    def follow(name):
        try:
            return gr.update(choices=size_choices(studio.entry(task, name)), value=None)
        except CatalogError:
            return gr.skip()

    presets.input(chosen, presets, [width, height], api_visibility="private")
    model.change(follow, model, presets, api_visibility="private", show_progress="hidden")
    return presets


SPEEDUP_LABELS = {"deepcache": "DeepCache (reuse the UNet's deep features between steps)",
                  "bf16": "bf16 UNet (on CPUs that compute bfloat16 natively)"}


def speedup_controls(entry: ModelEntry, elem_id: str) -> gr.CheckboxGroup:
    """The speed-ups a request runs with, in an Advanced panel: the model's own ticked."""
    with gr.Accordion("Advanced: speed-ups", open=False):
        return gr.CheckboxGroup([(SPEEDUP_LABELS[n], n) for n in SPEEDUP_NAMES], value=speedup_names(entry.speedups),
                                label="Speed-ups", elem_id=elem_id,
                                info="each changes the pixels a little; the image's parameters say which ran")


def speedup_names(text: str) -> list[str]:
    """The speed-up names in a catalog default ("deepcache,bf16") or a result's description of them
    ("deepcache (interval 3, branch 0), bf16")."""
    return [n for n in SPEEDUP_NAMES if n in str(text or "")]


def sampler_choices(studio: Service, entry: ModelEntry) -> list[tuple[str, str]]:
    """The sampler dropdown for a model: its own published scheduler named ("Model default (PNDM)")."""
    own = studio.published_scheduler(entry)
    label = f"{MODEL_DEFAULT} ({own.removesuffix('Scheduler')})" if own else MODEL_DEFAULT
    return [(label if name == MODEL_DEFAULT else name, name) for name in SAMPLER_NAMES]


def model_defaults(studio: Service, task: str, name: str, targets: dict) -> dict:
    """{control: update} for the named `targets` when the model changes to `name`."""
    try:
        e = studio.entry(task, name)
    except CatalogError:
        return {c: gr.skip() for c in targets.values()}
    out = {}
    for field, control in targets.items():
        if field == "sampler":
            out[control] = gr.update(choices=sampler_choices(studio, e), value=e.sampler)
        elif field == "speedups":
            out[control] = gr.update(value=speedup_names(e.speedups))
        elif field == "steps":     # the slider reaches the model's own default (the paper's zoo: 200-400)
            out[control] = gr.update(value=e.default_for(field), maximum=steps_maximum(studio.limits, e))
        else:
            out[control] = gr.update(value=e.default_for(field))
    return out


def steps_maximum(limits, entry: ModelEntry) -> int:
    """The steps slider's end: 100, or the model's default where that is more (within the limit)."""
    return min(limits.max_steps, max(100, entry.steps))


def item_path(item) -> str | None:
    """The file path of one gallery item, whatever form Gradio hands it in."""
    if isinstance(item, (list, tuple)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image", item)
        item = item.get("path") if isinstance(item, dict) else item
    return str(item) if item else None


def selected_image(gallery, evt: gr.SelectData) -> str | None:
    """The path of the gallery image the user clicked."""
    if not gallery or evt.index is None:
        return None
    return item_path(gallery[evt.index])


def first_image(gallery) -> str | None:
    return item_path(gallery[0]) if gallery else None

"""Presets: a tab's settings saved under a name and loaded back, kept in the visitor's own browser
(`gr.BrowserState`: localStorage, per browser, never on the server). A preset holds every plain
control a result's info fills in (prompt, negative prompt, steps, sampler, guidance, size, model,
speed-ups, ...) except the seed; images and drawn boxes stay as they are.

    with gr.Tab("Text → Image"):
        tab = text2img.build(studio)
        presets.attach(demo, "text2img", tab.params())
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

PLAIN = (gr.Textbox, gr.Slider, gr.Number, gr.Dropdown, gr.Checkbox, gr.CheckboxGroup, gr.Radio)
SKIPPED = ("seed",)          # a preset is a way of working, not one image
MAX_PRESETS = 50             # per tab and browser
MAX_NAME = 60


@dataclass
class Presets:
    store: gr.BrowserState
    choice: gr.Dropdown
    name: gr.Textbox
    save: gr.Button
    load: gr.Button
    delete: gr.Button


def saved_settings(params: dict) -> dict:
    """The controls a preset keeps, by info key."""
    return {k: c for k, c in params.items() if isinstance(c, PLAIN) and k not in SKIPPED}


def save(store: dict | None, name: str, names: list[str], values: list) -> dict:
    """`store` with `name` set to the controls' `values`; a name is required and kept short."""
    name = (name or "").strip()
    if not name:
        raise gr.Error("type a name for the preset first, then Save")
    if len(name) > MAX_NAME:
        raise gr.Error(f"a preset's name is at most {MAX_NAME} characters; this one has {len(name)}")
    store = dict(store or {})
    if name not in store and len(store) >= MAX_PRESETS:
        raise gr.Error(f"this browser keeps at most {MAX_PRESETS} presets per tab: delete one first")
    store[name] = dict(zip(names, values))
    return store


def attach(demo: gr.Blocks, task: str, params: dict) -> Presets:
    """A "Presets" panel at this point of the tab, saving and loading the tab's `params` controls."""
    keep = saved_settings(params)
    names, controls = list(keep), list(keep.values())
    store = gr.BrowserState({}, storage_key=f"ldm-presets-{task}")
    with gr.Accordion("Presets: save this tab's settings under a name (kept in this browser)", open=False,
                      elem_id=f"{task}-presets"):
        with gr.Row():
            choice = gr.Dropdown([], value=None, label="Saved presets", elem_id=f"{task}-preset-choice")
            name = gr.Textbox(label="Name for the current settings", max_lines=1, elem_id=f"{task}-preset-name",
                              placeholder="e.g. quick draft")
        with gr.Row():
            save_b = gr.Button("Save", size="sm", elem_id=f"{task}-preset-save")
            load_b = gr.Button("Load", size="sm", variant="primary", elem_id=f"{task}-preset-load")
            delete_b = gr.Button("Delete", size="sm", variant="stop", elem_id=f"{task}-preset-delete")

    def listed(store, value=None):
        return gr.update(choices=sorted(store or {}), value=value)

    def on_save(store, name, *values):
        store = save(store, name, names, list(values))
        gr.Info(f"Saved the preset '{name.strip()}'")
        return store, listed(store, name.strip())

    def on_load(store, chosen):
        preset = (store or {}).get(chosen)
        if preset is None:
            raise gr.Error("pick a saved preset first, then Load")
        return [preset.get(n, gr.skip()) for n in names]

    def on_delete(store, chosen):
        if chosen not in (store or {}):
            raise gr.Error("pick a saved preset first, then Delete")
        store = {k: v for k, v in store.items() if k != chosen}
        return store, listed(store)

    demo.load(listed, store, choice, api_visibility="private")
    save_b.click(on_save, [store, name, *controls], [store, choice], api_visibility="private")
    load_b.click(on_load, [store, choice], controls, api_visibility="private")
    delete_b.click(on_delete, [store, choice], [store, choice], api_visibility="private")
    return Presets(store, choice, name, save_b, load_b, delete_b)

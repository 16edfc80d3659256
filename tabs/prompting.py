"""Prompt helpers for the tabs: a live token counter under a prompt box (`ldm_core.prompts`:
weights do not count, what the model would cut off is named)."""
from __future__ import annotations

import html

import gradio as gr

from ldm_core.prompts import has_wildcards
from ldm_core.service import Service


def token_text(studio: Service, task: str, model: str | None, prompt: str) -> str:
    """"12 / 75 tokens", or what is over the limit and cut off, or why it cannot be counted."""
    if not prompt:
        return ""
    try:
        n = studio.count_tokens(task, model, prompt)
    except Exception as e:       # a bracket not closed yet, an unknown wildcard list, a model not downloaded
        return f"<span class='ldm-tokens-error'>{html.escape(str(e)[:200])}</span>"
    line = f"{n.used} / {n.limit} tokens" + (" (one pick of the wildcards)" if has_wildcards(prompt) else "")
    if not n.over:
        return line
    return f"**⚠ {line}**: this model reads {n.limit}; cut off: '{html.escape(n.cut_off_text[:200])}'"


def token_counter(studio: Service, task: str, prompt_box: gr.Textbox, model_dropdown: gr.Dropdown) -> gr.Markdown:
    """A line that counts the prompt's tokens for the chosen model as the user types."""
    elem = f"{task}-tokens"
    counter = gr.Markdown("", elem_id=elem, elem_classes=["ldm-tokens"])

    def count(prompt, model):
        return token_text(studio, task, model, prompt or "")

    for event in (prompt_box.change, model_dropdown.change):
        event(count, [prompt_box, model_dropdown], counter, api_visibility="private", show_progress="hidden",
              trigger_mode="always_last", queue=False)
    return counter

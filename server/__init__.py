"""The HTTP layer around Gradio: security middleware (`security.py`), fair use of the queue
(`fair_use.py`: per-client quota, abandoned jobs, a calmer poll) and the errors users see (`errors.py`).
It knows Gradio and nothing of the tabs; the tabs and webui.py use it."""

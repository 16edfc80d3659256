"""Latent Diffusion Studio: a tab per task on one resident model stack.

    python webui.py                       # http://127.0.0.1:7860, built-in models
    python webui.py --share               # public Gradio link
    python webui.py --listen --auth me:pw # on the LAN, behind a password

Assembly only: parse flags, build the service, add the tabs, wire "send to", queue, launch.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image
from starlette.middleware import Middleware

from ldm_core.catalog import DEFAULT_CATALOG, Catalog
from ldm_core.cluster import ClusterConfig, RayBackend, Replicas
from ldm_core.device import pick_device
from ldm_core.pool import device_list, threads_per_device
from ldm_core.limits import SERVER_BUDGETS, server_limits
from ldm_core.provenance import read_parameters
from ldm_core.service import Service
from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS
from server import security
from server.fair_use import calm_queue, generation_concurrency, reserve_per_client
from server.owners import VisitorCookie
from server.owners import configure as configure_owners
from tabs import api, compression, history, in_sight, pnginfo, presets, shortcuts, task_tabs, uploads
from tabs.common import GPU_CONCURRENCY_ID
from tabs.controls import first_image, info_updates

TITLE = "Latent Diffusion Studio"
# small images (the built-in models' 64x64) fill their boxes, drawn as crisp pixels; result galleries
# grow with their images instead of cropping them in a box of 55 % of the window's height
_GALLERIES = ("#t2i-gallery", "#layout-gallery", "#inpaint-gallery")
CSS = ("#sr-input img, #sr-gallery img { width: 100%; height: 100%; object-fit: contain; "
       "image-rendering: pixelated; }\n"
       + ", ".join(f"{g} .fixed-height, {g} .grid-wrap" for g in _GALLERIES)
       + " { max-height: none !important; overflow-y: visible !important; }\n"
       # a phone: text->image's results right under its Generate button, its settings below them
       "@media (max-width: 640px) { #t2i-left { display: contents; } #t2i-results { order: 1; } "
       "#t2i-settings { order: 2; } }\n"
       "#compress-gallery img { image-rendering: pixelated; }\n"     # reconstructions: every pixel as it came out
       # the image -> image input fills its box (a 64 px picture was drawn 64 px wide in a 470 px box)
       "#i2i-input img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }\n"
       # "Parameters used": no line numbers (a wrapped line put them out of step), long lines wrapped
       "[id$='-info'] .cm-gutters { display: none !important; }\n"
       "[id$='-info'] .cm-content, [id$='-info'] .cm-line { white-space: pre-wrap !important; "
       "overflow-wrap: anywhere; }\n"
       # a dropdown's long choice is cut with an ellipsis before its arrow, not drawn under it
       ".secondary-wrap input[role=combobox] { min-width: 0; text-overflow: ellipsis; }\n"
       ".secondary-wrap .icon-wrap { flex: none; }\n"
       "#sr-compare img, #i2i-compare img, #inpaint-compare img { image-rendering: pixelated; }\n"
       # a box's label dialog: the label field takes the width it has (it was 60 px wide on a phone)
       "@media (max-width: 640px) { #model-box-edit .modal-container { width: 92vw !important; }\n"
       "#model-box-edit .model-content { display: flex; flex-wrap: wrap; align-items: center; row-gap: 8px; }\n"
       "#model-box-edit .model-content > div:nth-child(2) { flex: 1 1 220px; } }\n"
       # a phone: results two to a row, every one in sight (four in a row ran past the screen's edge)
       "@media (max-width: 640px) { [id$='-gallery'] .grid-container { "
       "grid-template-columns: repeat(2, minmax(0, 1fr)) !important; } }")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--listen", action="store_true", help="bind 0.0.0.0 (same as --host 0.0.0.0)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--auth", action="append", default=[],
                   help="user:password (repeatable), or a file with one user:password per line; the "
                        "environment variable LDM_AUTH (user:password lines, e.g. a Space secret) adds more")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="a resident model stack and a generation thread per device: cuda:0,cuda:1 or all "
                        "(every GPU); cpu,cpu shares the cores between two CPU stacks (docs/scaling.md)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="generate on a Ray Serve deployment (pip install .[cluster]): auto (the running cluster, "
                        "else a local one) or ray://host:10001 (docs/scaling.md)")
    p.add_argument("--ray-replicas", default="1", metavar="N|MIN-MAX",
                   help="replicas of the deployment: a count, or a range Serve autoscales within")
    p.add_argument("--ray-gpus", type=float, default=None,
                   help="GPUs per replica (default 1 where the cluster has GPUs, else 0: CPU replicas)")
    p.add_argument("--ray-cpus", type=float, default=1.0, help="CPU cores per CPU replica (its torch threads)")
    p.add_argument("--models", default=str(DEFAULT_CATALOG), help="model catalog file (TOML)")
    p.add_argument("--attention-slicing", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="evict least-recently used models past this much resident weight memory")
    p.add_argument("--queue-size", type=int, default=32, help="requests waiting at most; more get 'busy'")
    p.add_argument("--output-dir", default=os.environ.get("LDM_OUTPUT_DIR", "outputs"))
    p.add_argument("--offline", action="store_true", help="never download hub models")
    p.add_argument("--preload", action="store_true", help="load every task's default model before serving")
    p.add_argument("--max-work", type=float, default=None,
                   help="compute budget per request in megapixel-steps (output pixels x steps x images x samples); "
                        "default by device: " + ", ".join(f"{d} {w:g}" for d, (w, _) in SERVER_BUDGETS.items()))
    p.add_argument("--max-seconds", type=float, default=None,
                   help="a generation is stopped after this long (default by device: "
                        + ", ".join(f"{d} {t:g} s" for d, (_, t) in SERVER_BUDGETS.items()) + ")")
    p.add_argument("--max-jobs-per-client", type=int, default=None,
                   help="generations one client address may have running or waiting (default 3)")
    p.add_argument("--shared-history", action="store_true",
                   help="every visitor sees every result in History (a private deployment); by default a visitor "
                        "sees only their own (their browser's, or their user's with --auth)")
    p.add_argument("--allowed-origin", action="append", default=[],
                   help="another origin whose pages may call this server (e.g. https://my.site); the server's "
                        "own origin always may")
    p.add_argument("--trusted-proxy", action="append", default=[], type=security.proxy_network, metavar="ADDRESS",
                   help="a reverse proxy (address or CIDR network, repeatable) whose X-Forwarded-For names the client; "
                        "from anyone else the header is ignored (the share tunnel and a Space's front end are "
                        "trusted without this)")
    p.add_argument("--monitoring", action="store_true",
                   help="serve Gradio's /monitoring dashboard (behind the login; without --auth allowed only on a "
                        "server bound to loopback, without --share)")
    p.add_argument("--mcp", action="store_true",
                   help="also serve the tasks as MCP tools at /gradio_api/mcp/ (for LLM clients such as Claude "
                        "Desktop), behind the same login, quota and budget as the HTTP API (docs/api.md, MCP)")
    return p.parse_args(argv)


def parse_auth(items: list[str]) -> list[tuple[str, str]] | None:
    pairs = []
    for item in items:
        is_file = "\n" not in item and len(item) < 1024 and Path(item).is_file()
        lines = Path(item).read_text().splitlines() if is_file else item.splitlines()
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, pw = line.partition(":")
            if not sep or not user or not pw:  # (the line itself may hold a password: not echoed)
                raise SystemExit(f"--auth expects user:password; line {n} of an --auth value is not that")
            pairs.append((user, pw))
    return pairs or None


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that contends for the heap an arena of its own (up to 8 per core) and
    keeps their freed memory, so the server's memory grows over its first requests (docs/benchmarks.md);
    two arenas keep it flat. No-op elsewhere."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, n)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def build_app(ui: Service) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo, shortcuts.keys(demo):
        gr.Markdown(f"## {TITLE}\nThe tasks of latent diffusion (Rombach et al., CVPR 2022), a tab each. Models "
                    f"load once and stay ready · running on `{ui.device}`")
        in_sight.results_follow_clicks(demo)
        uploads.slider_checks()        # a number typed past a slider's ends: said, not changed silently
        with gr.Tabs(overflow_behavior="wrap") as tabs:      # on a phone every tab stays in sight
            built = {}
            for name, module in task_tabs(ui.tasks).items():
                with gr.Tab(TASKS[name].title, id=name):
                    built[name] = module.build(ui)
                    presets.attach(demo, name, built[name].params())
            with gr.Tab("Perceptual compression", id="compression"):
                compression.build(ui)
            with gr.Tab("History", id="history") as history_tab:
                past = history.build(ui)
            with gr.Tab("PNG info", id="pnginfo"):
                info = pnginfo.build()
        api.build(ui)
        wire_send_to(built, tabs)
        wire_reuse(info.send, info.params, built, tabs, info.file)
        wire_reuse(past.reuse, past.params, built, tabs, past.path)
        for name, button in past.send.items():
            fields, target = sent_fields(built[name]), built[name].params()
            button.click(lambda path, name=name, fields=fields: _send(path, name, fields), past.path,
                         [built[name].image_input, tabs, *(target[k] for k in fields)], api_visibility="private")
        history_tab.select(past.load, None, past.shown, api_visibility="private")
    return demo


SENT_TEXT = ("prompt", "negative_prompt")     # what goes on with an image, where the target tab has it


def _send(image, tab: str, fields: tuple = (), fallback: dict | None = None) -> list:
    """Send `image` to `tab`: the image, the tab selected, and the image's own `fields` (its prompt as
    its PNG records it; else `fallback`'s, e.g. the text->image tab's prompt box)."""
    if not image:
        raise gr.Error("pick an image first, then send it on")
    try:
        made = read_parameters(image) or {}
    except OSError:              # no longer there, or not an image: the target tab says so
        made = {}
    if "xyplot" in made:
        raise gr.Error("this is an X/Y grid of several images, not one picture: generate the cell you want "
                       "on its own (each cell's values are in the grid's parameters), then send that")
    text = {k: made[k] if k in made else (fallback or {}).get(k, gr.skip()) for k in fields}
    return [image, gr.Tabs(selected=tab), *text.values()]


def sent_fields(tab) -> tuple:
    return tuple(k for k in SENT_TEXT if k in tab.params())


def wire_send_to(built: dict, tabs: gr.Tabs) -> None:
    """A text->image result goes on to every tab that takes an image, with its prompt."""
    t2i = built.get("text2img")
    for name, button in (t2i.send if t2i else {}).items():
        fields = sent_fields(built[name])

        def send(selected, gallery, prompt, negative, name=name, fields=fields):
            if not (selected or first_image(gallery)):
                raise gr.Error("generate an image first, then send it on")
            return _send(selected or first_image(gallery), name, fields,   # the clicked result, else the first
                         {"prompt": prompt, "negative_prompt": negative})

        target = built[name].params()
        button.click(send, [t2i.selected, t2i.gallery, t2i.prompt, t2i.negative_prompt],
                     [built[name].image_input, tabs, *(target[k] for k in fields)], api_visibility="private")


def wire_reuse(button: gr.Button, source, built: dict, tabs: gr.Tabs, image=None) -> None:
    """`button` sends the parameters in `source` (PNG info's, a history entry's) to the tab that made
    the image, its controls filled in by name; a tab with `reuse_image(path, params)` (inpainting's
    editor) also gets its image input filled from the image's file in `image`."""
    outputs = [c for tab in built.values() for c in tab.params().values()]
    pictures = {task: tab for task, tab in built.items() if image is not None and hasattr(tab, "reuse_image")}

    def send(params, path=None):
        if not params or params.get("task") not in built:
            raise gr.Error("pick an image made by the studio first (a PNG in PNG info, a result in History)")
        updates = []
        for task, tab in built.items():
            named = tab.params()
            updates += (info_updates(named, params, getattr(tab, "convert", None)) if task == params["task"]
                        else [gr.skip()] * len(named))
        filled = [tab.reuse_image(path, params) if task == params["task"] else gr.skip()
                  for task, tab in pictures.items()]
        return [*updates, *filled, gr.Tabs(selected=params["task"])]

    button.click(send, [source, *([image] if pictures else [])],
                 [*outputs, *(tab.image_input for tab in pictures.values()), tabs], api_visibility="private")


def build_service(args, limits) -> Service:
    """One stack, a stack per device of --devices, or (--ray) a front end to a Ray Serve deployment."""
    try:
        devices = device_list(args.devices) or [args.device]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    catalog = Catalog.load(args.models)
    stacks = [ModelStack(catalog, device=d, attention_slicing=args.attention_slicing, limits=limits,
                         memory_budget_gb=args.memory_budget_gb, output_dir=args.output_dir,
                         allow_downloads=not args.offline, threads=threads_per_device(devices)) for d in devices]
    if not args.ray:
        return Service(stacks)
    if importlib.util.find_spec("ray") is None:
        raise SystemExit("--ray needs Ray Serve: pip install .[cluster]")
    try:
        config = ClusterConfig(address=args.ray, replicas=Replicas.parse(args.ray_replicas), gpus=args.ray_gpus,
                               cpus=args.ray_cpus, limits=limits, allow_downloads=not args.offline)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return Service(stacks[:1], remote=RayBackend.start(config, Path(args.models).resolve()))


def main(argv=None) -> None:
    args = parse_args(argv)
    limit_malloc_arenas()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    host = "0.0.0.0" if args.listen else args.host
    auth = parse_auth(args.auth + ([os.environ["LDM_AUTH"]] if os.environ.get("LDM_AUTH") else []))
    if (host not in ("127.0.0.1", "localhost", "::1") or args.share) and not auth:
        print("WARNING: the studio is reachable from other machines without a password; "
              "add --auth user:password", file=sys.stderr)
    if args.monitoring and not auth and (host not in ("127.0.0.1", "localhost", "::1") or args.share):
        raise SystemExit("--monitoring without --auth is allowed only on a server bound to loopback, without --share")
    security.trust_proxies(args.trusted_proxy, share=args.share, space=bool(os.environ.get("SPACE_ID")))
    limits = server_limits(pick_device(args.device).type, max_work=args.max_work, max_seconds=args.max_seconds,
                           max_jobs_per_client=args.max_jobs_per_client)
    service = build_service(args, limits)
    stack = service.stack
    configure_owners(shared_history=args.shared_history, share_link=args.share)
    # the UI's image widgets are decoded by Gradio itself (the inpainting editor checks first): PIL
    # warns past this many pixels and refuses twice as many (a decompression bomb) before decoding
    Image.MAX_IMAGE_PIXELS = limits.max_input_pixels
    if args.preload and service.remote is None:
        for task in service.tasks:
            entry = service.entry(task)
            if stack.catalog.availability(entry)[0] and not entry.is_hub:
                for s in service.pool.stacks:
                    s.submit(s.load, entry).result()   # on each device's thread
    # each built-in model's speed here, measured on the device thread while the page starts, so
    # that a request which would run past --max-seconds is refused before it starts (throughput.py)
    if service.remote is None:
        service.calibrate_in_background()
    demo = build_app(service)
    calm_queue(demo.queue(max_size=args.queue_size, default_concurrency_limit=1))
    generation_concurrency(demo, GPU_CONCURRENCY_ID, service.concurrency)
    reserve_per_client(demo, limits.max_jobs_per_client, GPU_CONCURRENCY_ID)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    cache.mkdir(parents=True, exist_ok=True)
    space_host = os.environ.get("SPACE_HOST")       # on a Hugging Face Space: its own origin, framed by the hub
    guard = {"allowed_origins": args.allowed_origin + ([f"https://{space_host}"] if space_host else []),
             "frame_ancestors": ["https://huggingface.co"] if space_host else [], "password": bool(auth),
             "max_body_bytes": limits.max_upload_bytes + 1_000_000, "monitoring": args.monitoring,
             "mcp": args.mcp, "logins": auth or []}
    demo.launch(css=CSS, server_name=host, server_port=args.port, share=args.share, auth=auth, ssr_mode=False,
                show_error=False, footer_links=["api", "settings"], enable_monitoring=args.monitoring,
                max_file_size=limits.max_upload_bytes, prevent_thread_lock=True, mcp_server=args.mcp,
                app_kwargs={"lifespan": security.lifespan(guard, cache), "middleware": [Middleware(VisitorCookie)],
                            "docs_url": None, "redoc_url": None,
                            "openapi_url": None})
    if demo.share_url and "layer" in guard:
        guard["layer"].allow_origin(demo.share_url)
    if args.mcp and not demo.mcp_server:        # (its tool calls are set up by security.lifespan: server/mcp_tools.py)
        raise SystemExit(f"--mcp: Gradio could not start its MCP server: {demo.mcp_error}")
    demo.block_thread()


if __name__ == "__main__":
    main()

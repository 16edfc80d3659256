"""The studio as a server, measured: one request's path from the click to the image (section
`request`), and a generation while other programs use the CPU (section `contention`).

request     `python webui.py` in a subprocess; each task's endpoint called by three clients:
            raw HTTP `/gradio_api/call/<task>` (curl's way: a new session per call), raw HTTP
            `/gradio_api/queue/join` + `/queue/data` with one session (the browser's way), and
            gradio_client. Per request, the client's clock for posting, the event stream and the
            download, and the server's own log line (ldm_core.timing: when the device started, how long
            stack.run and the PNG took) for the rest; against the pipeline's time for the same
            request in a quiet process (stack.run in this process, before the server starts).
contention  stack.run on the built-in text->image model while N = 0, 1, 2, 4 CPU-bound processes
            (`while True: pass`) run, against the fair-share prediction: a thread of this process
            gets the CPU time of any other runnable thread, so with T generation threads on C cores
            an image should take quiet time x max(1, (T + N) / C); also with the thread count fixed
            (ldm_core/cpu.py off), which is how the studio ran before.
"""
from __future__ import annotations

import io
import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

TIMING = re.compile(r"ldm_core\.timing: (\w+) from ([\d.]+): run ([\d.]+) s \(pipeline ([\d.]+) s\), save ([\d.]+) s")
def task_args(task: str, size: int) -> dict:
    """The task's example request fields (`Task.example`, from the registry) at `size` pixels;
    images as PNG bytes."""
    from PIL import Image

    from ldm_core.tasks import TASKS
    return {k: _png(v) if isinstance(v, Image.Image) else v for k, v in TASKS[task].example(size).items()}


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


class Server:
    """`python webui.py` on a free port, its log read for ldm_core.timing lines."""

    def __init__(self, run, catalog: str, tmp: str):
        self.run, self.port, self.tmp, self.catalog_path = run, run.free_port(), Path(tmp), catalog
        self.log_path = self.tmp / "request-webui.log"
        self.url = f"http://127.0.0.1:{self.port}/"
        self.read = 0

    def __enter__(self):
        import httpx
        cmd = [sys.executable, str(self.run.ROOT / "webui.py"), "--port", str(self.port), "--models",
               self.catalog_path, "--offline", "--output-dir", str(self.tmp / "request-out"), "--preload"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     env=self.run.child_env(), cwd=str(self.run.ROOT))
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 180:
            if self.proc.poll() is not None:
                raise RuntimeError(f"webui.py exited: {self.log_path.read_text()[-300:]}")
            try:
                httpx.get(self.url, timeout=1)
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        raise RuntimeError("webui.py did not answer within 180 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def timings(self) -> list[tuple]:
        """ldm_core.timing lines logged since the last call: (task, start epoch, run, pipeline, save)."""
        text = self.log_path.read_text()
        new, self.read = text[self.read:], len(text)
        return [(m[1], float(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in TIMING.finditer(new)]


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


class RawClient:
    """A client that speaks HTTP to Gradio's routes, timing each leg."""

    def __init__(self, url: str, info: dict, config: dict):
        import httpx
        self.http, self.url, self.info, self.args = httpx.Client(timeout=120), url, info, {}
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        self.session = uuid.uuid4().hex[:11]

    def data(self, task: str, seed: int) -> tuple[list, float]:
        """The endpoint's parameters in order (defaults, the task's values, files uploaded); upload time."""
        t0, args = time.perf_counter(), dict(self.args)
        for name, value in self.args.items():
            if isinstance(value, bytes):
                part = ("files", (f"{name}.png", value, "image/png"))
                r = self.http.post(self.url + "gradio_api/upload", files=[part])
                args[name] = {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}
        upload = time.perf_counter() - t0 if any(isinstance(v, bytes) for v in self.args.values()) else 0.0
        values = []
        for p in self.info["named_endpoints"][f"/{task}"]["parameters"]:
            v = args.get(p["parameter_name"], p.get("parameter_default"))
            values.append(seed if p["parameter_name"] == "seed" else v)
        return values, upload

    def _result_url(self, output) -> str:
        out = output[0]
        out = out[0]["image"] if isinstance(out, list) else out
        return out["url"]

    def call(self, task: str, seed: int) -> dict:
        """POST /call/<task>, then its event stream, then the image."""
        data, upload = self.data(task, seed)
        t = {"upload": upload, "sent": time.time()}
        r = self.http.post(self.url + f"gradio_api/call/{task}", json={"data": data})
        t["posted"] = time.time()
        output = None
        with self.http.stream("GET", self.url + f"gradio_api/call/{task}/{r.json()['event_id']}") as s:
            event = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "complete":
                    output = json.loads(line[5:])
                elif event == "error":
                    raise RuntimeError(f"{task}: {line}")
        t["complete"] = time.time()
        self.http.get(self._result_url(output)).raise_for_status()
        t["downloaded"] = time.time()
        return t

    def join(self, task: str, seed: int) -> dict:
        """POST /queue/join with this client's session, then /queue/data, then the image."""
        data, upload = self.data(task, seed)
        t = {"upload": upload, "sent": time.time()}
        r = self.http.post(self.url + "gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn[task], "session_hash": self.session, "trigger_id": None,
            "event_data": None})
        t["posted"] = time.time()
        event_id, output = r.json()["event_id"], None
        with self.http.stream("GET", self.url + f"gradio_api/queue/data?session_hash={self.session}") as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError(f"{task}: {msg}")
                    output = msg["output"]["data"]
                    break
        t["complete"] = time.time()
        self.http.get(self._result_url(output)).raise_for_status()
        t["downloaded"] = time.time()
        return t


def _legs(t: dict, server: tuple) -> dict:
    """One request's wall time in its legs (seconds)."""
    _, start, run, pipeline, save = server
    return {"upload": t["upload"], "post": t["posted"] - t["sent"], "to_device": start - t["posted"],
            "run": run, "pipeline": pipeline, "save": save, "to_client": t["complete"] - (start + run + save),
            "download": t["downloaded"] - t["complete"], "total": t["upload"] + t["downloaded"] - t["sent"],
            "path": t["upload"] + t["downloaded"] - t["sent"] - run}


def _size(task: str, ctx) -> int:
    """Input size: every task's output is ctx.size square (a task that enlarges its input by
    `Task.scale` takes that much less)."""
    from ldm_core.tasks import TASKS
    return ctx.size // TASKS[task].scale


def _client_kwargs(task: str, args: dict, tmp: Path) -> dict:
    from gradio_client import handle_file
    kw = {}
    for k, v in args.items():
        if isinstance(v, bytes):
            path = tmp / f"{task}-{k}.png"
            path.write_bytes(v)
            kw[k] = handle_file(str(path))
        else:
            kw[k] = v
    return kw


def _quiet_pipeline(run, ctx, task: str) -> dict:
    """stack.run for the request the server gets, in this (otherwise idle) process."""
    stack, size = ctx.stack(), _size(task, ctx)
    steps = stack.catalog.default(task).steps          # what the endpoint runs by default
    seeds = iter(range(1, 10_000))
    stack.run(run.make_request(task, 1, 0, steps, size))
    return run.stats(run.repeat(lambda: stack.run(run.make_request(task, 1, next(seeds), steps, size)),
                                3, ctx.repeats, ctx.budget))


LEGS = ("upload", "post", "to_device", "run", "save", "to_client", "download")


def bench_request(ctx, run) -> tuple[dict, list[str]]:
    import httpx
    from gradio_client import Client
    catalog = ctx.stack().catalog
    tasks = [t for t in run.task_names() if catalog.for_task(t) and catalog.default(t).steps]
    quiet = {t: _quiet_pipeline(run, ctx, t) for t in tasks}
    out, n = {}, max(3, ctx.repeats)
    with Server(run, ctx.catalog, ctx.tmp) as srv:
        info, config = httpx.get(srv.url + "gradio_api/info").json(), httpx.get(srv.url + "config").json()
        raw, client = RawClient(srv.url, info, config), Client(srv.url, verbose=False)
        for task in tasks:
            raw.args = task_args(task, _size(task, ctx))
            out[task] = {"pipeline_quiet": quiet[task]}
            for way in ("call", "join"):
                getattr(raw, way)(task, 0)                      # a first request: sessions, caches
                srv.timings()
                rows = []
                for i in range(n):
                    t = getattr(raw, way)(task, 1 + i)
                    rows.append(_legs(t, srv.timings()[-1]))
                out[task][way] = {k: run.stats([r[k] for r in rows]) for k in rows[0]}
            kw = _client_kwargs(task, raw.args, Path(ctx.tmp))
            client.predict(**kw, seed=0, api_name=f"/{task}")
            srv.timings()
            times, runs = [], []
            for i in range(n):
                t0 = time.perf_counter()
                client.predict(**kw, seed=1 + i, api_name=f"/{task}")
                times.append(time.perf_counter() - t0)
                runs.append(srv.timings()[-1][2])
            out[task]["gradio_client"] = {"total": run.stats(times), "run": run.stats(runs),
                                          "path": run.stats([t - r for t, r in zip(times, runs)])}
            for line in _request_rows(task, out[task], run)[-3:]:
                run.log(line)
    return out, _request_table(out, run)


WAYS = {"join": "raw HTTP, one session (the browser's way)", "call": "raw HTTP /call (a new session each)",
        "gradio_client": "gradio_client"}


def _request_rows(task: str, r: dict, run) -> list[str]:
    rows, quiet = [], r["pipeline_quiet"]["median"]
    for way in ("join", "call", "gradio_client"):
        legs = r[way]
        parts = " | ".join(f"{legs[k]['median'] * 1000:.0f}" if k in legs else "–" for k in LEGS)
        path = legs["path"]
        rows.append(f"| {task} | {WAYS[way]} | {run.fmt(legs['total'])} | **{path['median'] * 1000:+.0f} ms** "
                    f"({path['min'] * 1000:+.0f}–{path['max'] * 1000:+.0f}) | {quiet:.3f} s | {parts} |")
    return rows


def _request_table(out: dict, run) -> list[str]:
    lines = ["| task | client | end to end | over its own stack.run (the request path) | stack.run alone (quiet "
             "process) | upload | POST | → device | stack.run | PNG | → client | download (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, r in out.items():
        lines += _request_rows(task, r, run)
    lines.append("(legs: the client's clock for upload, POST, the event stream's end and the download; the server's "
                 "log for when the device started and how long stack.run and the PNG took; → device = queueing, "
                 "the job's session and the hop to the device thread; → client = the result's message)")
    return lines


# ------------------------------------------------------------------ contention
def bench_contention(ctx, run) -> tuple[dict, list[str]]:
    import torch
    stack, cpu = ctx.stack(), ctx.stack().cpu
    size, steps = ctx.size, ctx.steps
    counts = (0, 1) if ctx.smoke else (0, 1, 2, 4)
    seeds = iter(range(1, 10_000))

    def one():
        stack.run(run.make_request("text2img", 1, next(seeds), steps, size))

    one()
    out, lines = {}, ["| competing CPU-bound processes | threads | s/image, the studio (ldm_core/cpu.py) | "
                      "fair share | ratio | s/image, threads fixed (before) | ratio |", "|---|---|---|---|---|---|---|"]
    quiet = None
    for n in counts:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        try:
            time.sleep(0.5)
            row = {}
            for mode in ("governed", "fixed"):
                cpu.enabled = mode == "governed" and cpu.available
                torch.set_num_threads(cpu.most)
                cpu.current = cpu.most
                times = run.repeat(one, 2 if ctx.smoke else 3, ctx.repeats, ctx.budget * (1 + n))
                row[mode] = run.stats(times)
                row[f"{mode}_threads"] = cpu.current
        finally:
            for p in procs:
                p.kill()
                p.wait()
        cpu.enabled = cpu.available
        if quiet is None:
            quiet = row["governed"]["median"]
        fair = quiet * max(1.0, (cpu.most + n) / cpu.cores)
        row["fair_share"] = fair
        row["ratio"], row["ratio_fixed"] = row["governed"]["median"] / fair, row["fixed"]["median"] / fair
        out[n] = row
        lines.append(f"| {n} | {row['governed_threads']} | {run.fmt(row['governed'])} | {fair:.3f} s | "
                     f"**{row['ratio']:.2f}×** | {run.fmt(row['fixed'])} | {row['ratio_fixed']:.2f}× |")
        run.log(lines[-1])
    lines.append(f"(fair share: the quiet time x max(1, ({cpu.most} threads + N) / {cpu.cores} cores); "
                 f"text->image {size}x{size}, {steps} steps, built-in model; target: ratio <= 1.5)")
    return {"cores": cpu.cores, "threads": cpu.most, "by_competitors": out}, lines

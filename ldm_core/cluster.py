"""Generation on a Ray Serve deployment: each replica a resident model stack on one GPU (or a
set of CPU cores), the Gradio front end one process that checks, saves and keeps History.

    backend = RayBackend.start(ClusterConfig(address="auto", replicas=Replicas(2, 2)), "models/catalog.toml")
    service = Service(stack, remote=backend)        # Service.start(...) now runs on the replicas

A request crosses as its dataclass; the replica streams messages back through the deployment
handle: ("step", ...) at most every UPDATE_SECONDS with its preview image and the images finished
so far, then ("done", Result) or ("error", exception). Cancelling the front end's job cancels the
handle's response, which cancels the replica's generator; it stops the pipeline at its next step.
A replica that dies mid-request is retried once on another; after that the user reads why.
`ray[serve]` is an optional extra (`pip install .[cluster]`); nothing here imports it until used.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from .catalog import Catalog
from .jobs import UPDATE_SECONDS, Phase, PhaseStep
from .limits import DEFAULT_LIMITS, Limits
from .pipelines.common import GenerationCancelled, StepInfo
from .results import Result
from .service import Service, Stage
from .stack import ModelStack

log = logging.getLogger("ldm_core.cluster")
APP_NAME = "latent-diffusion-studio"
RETRIES = 1            # a request whose replica died runs again this many times, on another replica


class ReplicaLost(RuntimeError):
    """The replica running a generation stopped, and the retry did too. The message is safe to show."""


@dataclass(frozen=True)
class Replicas:
    """How many replicas: `least` == `most` is a fixed count; otherwise Serve autoscales between them."""
    least: int = 1
    most: int = 1

    @classmethod
    def parse(cls, text: str) -> "Replicas":
        """`--ray-replicas`: "2" (fixed) or "1-4" (autoscaled between 1 and 4)."""
        try:
            parts = [int(p) for p in str(text).split("-")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or min(parts) < (0 if len(parts) == 2 else 1) or parts[-1] < 1 \
                or parts[0] > parts[-1]:
            raise ValueError(f"--ray-replicas: {text!r} is not a count (2) or a range (1-4)")
        return cls(parts[0], parts[-1])


@dataclass
class ClusterConfig:
    address: str = "auto"            # "auto": the running cluster, else a local one; or "ray://host:10001"
    replicas: Replicas = field(default_factory=Replicas)
    gpus: float | None = None        # per replica; 0: a CPU replica of `cpus` cores; None: 1 where the cluster has GPUs
    cpus: float = 1.0
    limits: Limits = DEFAULT_LIMITS
    allow_downloads: bool = True
    runtime_env: dict | None = None  # e.g. {"working_dir": "."} where the nodes lack the package


# ---------------------------------------------------------------- the replica (runs inside Ray)
class StudioReplica:
    """A Serve deployment's replica: a resident ModelStack of the catalog at `models`, generating."""

    def __init__(self, models: str, device: str, threads: int | None, limits: Limits, allow_downloads: bool):
        out = tempfile.mkdtemp(prefix="ldm-replica-")      # nothing is saved here: the front end saves
        self.service = Service(ModelStack(Catalog.load(models), device=device, threads=threads, limits=limits,
                                          output_dir=out, allow_downloads=allow_downloads))
        self.name = _replica_name()
        self.counts = {"generations": 0, "cancelled": 0}    # ended here: all, and stopped by a cancel

    def whoami(self) -> dict:
        return {"replica": self.name, "pid": os.getpid(), "device": self.service.device, **self.counts}

    async def generate(self, request):
        """Stream ("step", ...) messages, then ("done", Result) or ("error", exception)."""
        loop, out, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        relay = _Relay(self.service, Stage(), self.name)

        def on_step(s: StepInfo) -> bool:
            message = relay.message(s)
            if message is not None:
                loop.call_soon_threadsafe(out.put_nowait, message)
            return cancel.is_set()

        def work():
            say = ("started", self.name, os.getpid(), dict(self.counts))    # as the device begins it
            loop.call_soon_threadsafe(out.put_nowait, say)
            try:
                result = self.service.run(request, on_step, relay.stage)
                return "done", replace(result, images=list(result.images))
            except GenerationCancelled as e:
                self.counts["cancelled"] += 1
                return "error", e
            except BaseException as e:  # handed to the caller, as itself where it pickles
                return "error", _portable(e)
            finally:
                self.counts["generations"] += 1
        future = self.service.submit(work)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(out.put_nowait, f.result()))
        try:
            while True:
                message = await out.get()
                yield message
                if message[0] in ("done", "error"):
                    return
        finally:       # also when the caller cancelled (CancelledError here): the pipeline stops
            cancel.set()


class _Relay:
    """The replica's side of the step messages: timed like a Job's updates, each with a preview and
    the images finished since the last message."""

    def __init__(self, service: Service, stage: Stage, name: str):
        self.service, self.stage, self.name = service, stage, name
        self._due = 0.0
        self._sent = 0

    def message(self, s: StepInfo):
        now = time.monotonic()
        phase = getattr(s, "phase", None)
        finished = len(phase.finished) if phase is not None else 0
        if now < self._due and finished == self._sent and s.step < s.total:
            return None
        self._due = now + UPDATE_SECONDS
        try:
            look = None if self.stage.model is None else self.service.stack.preview(self.stage.model, s.latents)
        except Exception:  # a preview is never worth failing a generation
            look = None
        new = (list(phase.finished[self._sent:]), list(phase.finished_info[self._sent:])) if phase else ([], [])
        self._sent = finished
        bare = replace(phase, finished=[], finished_info=[]) if phase is not None else None
        return "step", s.step, s.total, s.timestep, look, bare, new


def _portable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _replica_name() -> str:
    try:
        from ray import serve  # optional: pip install .[cluster]
        ctx = serve.get_replica_context()
        rid = getattr(ctx, "replica_id", None)
        return str(getattr(rid, "unique_id", None) or getattr(ctx, "replica_tag", None) or os.getpid())
    except Exception:
        return f"pid {os.getpid()}"


# ---------------------------------------------------------------- the front end's side
class RayBackend:
    """Generation sent to the `StudioReplica` deployment through its DeploymentHandle. `submit` runs
    a job's work on a front-end thread (one per replica it may use); `run` streams one request."""

    def __init__(self, handle, config: ClusterConfig):
        self.handle = handle
        self.config = config
        self.concurrency = config.replicas.most
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ldm-ray")
        self.ran_on: list[str] = []        # each request's replica, in order (logged too)
        self.seen: dict[str, dict] = {}    # each replica's counts when it last started a request

    @classmethod
    def start(cls, config: ClusterConfig, models: str) -> "RayBackend":
        """Connect to (or start) the cluster and deploy the replicas."""
        import ray  # optional: pip install .[cluster]
        from ray import serve  # optional: pip install .[cluster]
        init = {"runtime_env": config.runtime_env} if config.runtime_env else {}
        if ray.is_initialized():         # the caller connected already (a test's local cluster)
            pass
        elif config.address == "auto":
            try:
                ray.init(address="auto", **init)
                log.info("connected to the running Ray cluster")
            except ConnectionError:
                ray.init(include_dashboard=False, **init)
                log.info("no Ray cluster was running: started a local one (%s CPUs)",
                         ray.cluster_resources().get("CPU"))
        else:
            ray.init(address=config.address, **init)
        if config.gpus is None:
            config.gpus = 1.0 if ray.cluster_resources().get("GPU") else 0.0
        handle = serve.run(deployment(config).bind(str(models), *_replica_args(config)), name=APP_NAME,
                           route_prefix=None)
        return cls(handle, config)

    def describe(self) -> str:
        r = self.config.replicas
        count = f"{r.least}" if r.least == r.most else f"{r.least}–{r.most}"
        each = f"{self.config.gpus:g} GPU" if self.config.gpus else f"{self.config.cpus:g} CPU core(s)"
        return f"Ray Serve, {count} replica{'s' * (r.most != 1)} of {each} each"

    def submit(self, fn, *args) -> Future:
        return self._threads.submit(fn, *args)

    def run(self, request, callback) -> Result:
        """`request` on a replica: its steps reported to `callback` (True: cancel), then its Result."""
        from ray import exceptions  # optional: pip install .[cluster]
        from ray.serve import exceptions as serve_exceptions  # optional, as above
        lost = (exceptions.ActorDiedError, exceptions.ActorUnavailableError, exceptions.RayActorError,
                serve_exceptions.ReplicaUnavailableError)
        for attempt in range(RETRIES + 1):
            try:
                return self._run_once(request, callback)
            except lost as e:
                what = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                if attempt < RETRIES:
                    log.warning("the replica running a generation stopped (%s); running it again on another", what)
                    continue
                log.warning("the replica running a generation stopped again (%s); giving up", what)
                raise ReplicaLost("the worker running this generation stopped, and so did the retry; the "
                                  "server keeps serving: try again in a moment") from None

    def _run_once(self, request, callback) -> Result:
        stream = self.handle.options(stream=True).generate.remote(request)
        phases: dict = {}
        try:
            for message in stream:
                kind = message[0]
                if kind == "started":
                    self.ran_on.append(message[1])
                    self.seen[message[1]] = message[3]
                    log.info("generation on replica %s (pid %s; %s)", message[1], message[2], message[3])
                elif kind == "step" and callback is not None and callback(_step(message, phases)):
                    raise GenerationCancelled("cancelled")
                elif kind == "done":
                    return message[1]
                elif kind == "error":
                    raise message[1]
            raise ReplicaLost("the replica ended a generation without its result")
        finally:
            stream.cancel()       # a no-op once it has ended; else the replica's pipeline stops


def _step(message, phases: dict) -> StepInfo:
    """A step message as the StepInfo a Job reads; `latents` is the replica's preview image. A
    stage's finished images accumulate in this side's copy of its Phase."""
    _, step, total, timestep, look, bare, (images, infos) = message
    if bare is None:
        return StepInfo(step, total, timestep, look)
    phase = phases.setdefault((bare.name, bare.index, bare.label), bare)
    phase.finished.extend(images)
    phase.finished_info.extend(infos)
    return PhaseStep(step, total, timestep, look, phase)


def _replica_args(config: ClusterConfig) -> tuple:
    device = "cuda" if config.gpus else "cpu"
    threads = None if config.gpus else max(1, int(config.cpus))
    return device, threads, config.limits, config.allow_downloads


def deployment(config: ClusterConfig):
    """The Serve deployment of StudioReplica for `config`: one generation at a time per replica."""
    from ray import serve  # optional: pip install .[cluster]
    r = config.replicas
    scaling = {"num_replicas": r.most} if r.least == r.most else {
        "autoscaling_config": {"min_replicas": r.least, "max_replicas": r.most, "target_ongoing_requests": 1}}
    actor = {"num_gpus": config.gpus} if config.gpus else {"num_cpus": config.cpus}
    return serve.deployment(StudioReplica, name="StudioReplica", ray_actor_options=actor,
                            max_ongoing_requests=1, **scaling)


__all__ = ["APP_NAME", "ClusterConfig", "Phase", "RayBackend", "ReplicaLost", "Replicas", "StudioReplica",
           "deployment"]

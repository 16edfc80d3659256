"""The f trade-off's results (`<out>/f*/results.json`) as a markdown table and two plots that
mirror the paper's Fig. 6 (quality against training progress) and Fig. 7 (quality against
sampling throughput)."""
from __future__ import annotations

import json
from pathlib import Path

from ..data.shapes import CAPTION_FORMS


def load(out: str | Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in Path(out).glob("f*/results.json")]
    return sorted(rows, key=lambda r: r["f"])


def _psnr(x: float) -> str:
    return "— (pixels)" if x == float("inf") else f"{x:.1f} dB"


def table(rows: list[dict]) -> str:
    lines = ["| f | diffusion on | autoencoder PSNR | UNet params | training images / CPU-s | steps in budget | "
             "sampling images / CPU-s (25 steps) | " + " | ".join(CAPTION_FORMS) + " | mean | objects found | FID |",
             "|---|---|---|---|---|---|---|" + "---|" * (len(CAPTION_FORMS) + 3)]
    for r in rows:
        e = r["evals"][-1]
        c, h, w = r["latent_shape"]
        lines.append(f"| {r['f']} | {h}×{w}×{c} | {_psnr(r['ae_psnr'])} | {r['unet_params'] / 1e6:.2f} M | "
                     f"{r['train_images_per_cpu_s']:.1f} | {r['steps']} | {r['sample_images_per_cpu_s']:.2f} | "
                     + " | ".join(f"{100 * e.get('acc_' + k, float('nan')):.0f} %" for k in CAPTION_FORMS)
                     + f" | **{100 * e['acc_mean']:.0f} %** | {100 * e.get('objects_found', float('nan')):.0f} % | "
                     f"{e['fid']:.0f} |")
    lines += ["", "Over training (caption accuracy, mean of the four forms / objects found / classifier-FID, "
                  "at each evaluation):", "",
              "| f | " + " | ".join(f"eval {i + 1}" for i in range(max(len(r["evals"]) for r in rows))) + " |",
              "|---|" + "---|" * max(len(r["evals"]) for r in rows)]
    for r in rows:
        lines.append(f"| {r['f']} | " + " | ".join(f"{e['cpu_minutes']:.1f} CPU-min, step {e['step']}: "
                                                  f"{100 * e['acc_mean']:.0f} % / "
                                                  f"{100 * e.get('objects_found', float('nan')):.0f} % / {e['fid']:.0f}"
                                                  for e in r["evals"]) + " |")
    return "\n".join(lines)


def plots(rows: list[dict], progress_png: Path, speed_png: Path) -> None:
    import matplotlib  # lazy: matplotlib: only for plots, and slow to import
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib: only for plots, and slow to import

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        x = [e["cpu_minutes"] for e in r["evals"]]
        a1.plot(x, [100 * e.get("objects_found", e["acc_mean"]) for e in r["evals"]], "o-", label=f"f = {r['f']}")
        a2.plot(x, [e["fid"] for e in r["evals"]], "o-", label=f"f = {r['f']}")
    a1.set(xlabel="training CPU-minutes", ylabel="asked objects drawn right (%)", title="quality vs training")
    a2.set(xlabel="training CPU-minutes", ylabel="classifier-FID (lower is better)", title="FID vs training")
    a1.legend()
    fig.tight_layout()
    fig.savefig(progress_png, dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        e = r["evals"][-1]
        x = r["sample_images_per_cpu_s"]
        y = 100 * e.get("objects_found", e["acc_mean"])
        a1.scatter(x, y)
        a1.annotate(f"f={r['f']}", (x, y), textcoords="offset points", xytext=(4, 4))
        a2.scatter(x, e["fid"])
        a2.annotate(f"f={r['f']}", (x, e["fid"]), textcoords="offset points", xytext=(4, 4))
    for a, label in ((a1, "asked objects drawn right, end of budget (%)"), (a2, "classifier-FID at the end")):
        a.set(xscale="log", xlabel="sampling throughput, images / s (one core, 25 steps, guidance)", ylabel=label)
    fig.tight_layout()
    fig.savefig(speed_png, dpi=110)
    plt.close(fig)


def write(out: str | Path, docs: str | Path | None = None) -> str:
    """The table into <out>/report.md and the plots beside it; with `docs`, copies there too."""
    rows = load(out)
    text = table(rows)
    for d in [Path(out)] + ([Path(docs)] if docs else []):
        d.mkdir(parents=True, exist_ok=True)
        (d / "f-tradeoff-results.md").write_text(text + "\n")
        plots(rows, d / "f-tradeoff-progress.png", d / "f-tradeoff-speed.png")
    return text

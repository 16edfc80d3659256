"""Server memory around big in-budget requests: `python bench/rss_soak.py`.

The real server (tests/servers.py) on the tiny test models; after a warm-up, three rounds of a
512x512 text->image request and a 128x128 hires request of 2 images, each followed by small ones.
Prints the server's VmRSS after each and its change over the soak (docs/security.md).
"""
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from servers import webui  # noqa: E402

from ldm_core.testing import write_tiny_catalog  # noqa: E402

def call(s, api, data):
    r = httpx.post(s.url + f"gradio_api/call/{api}", json={"data": data}, timeout=600)
    assert r.status_code == 200, r.text
    return httpx.get(s.url + f"gradio_api/call/{api}/{r.json()['event_id']}", timeout=900).text

root = Path(tempfile.mkdtemp(prefix="ldm-rss-"))
cat = write_tiny_catalog(root / "m")
with webui(cat, root / "out", "--max-seconds", "600", "--max-work", "100000") as s:
    small = ["a", "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img", False, ""]
    big = [["a", "", 4, 3.0, 1, 1, 512, 512, "DDIM", "tiny-text2img", False, ""],
           ["a", "", 20, 3.0, 1, 2, 128, 128, "DDIM", "tiny-text2img", True, "tiny-superres"]]
    for _ in range(3):
        call(s, "text2img", small)
    time.sleep(20)   # the start-up measurement of each model's speed runs meanwhile
    for _ in range(3):
        call(s, "text2img", small)
    base = s.rss_kb()
    print("after warm-up", base // 1024, "MB", flush=True)
    for rnd in range(3):
        for b in big:
            t = time.time()
            text = call(s, "text2img", b)
            print(f"round {rnd}: {b[6]}x{b[7]}{' hires' if b[10] else ''}, {time.time() - t:.1f} s, "
                  f"{'done' if 'complete' in text else 'failed'}, VmRSS {s.rss_kb() // 1024} MB", flush=True)
        for _ in range(3):
            call(s, "text2img", small)
    end = s.rss_kb()
    print("after the soak", end // 1024, "MB; change", round(100 * (end - base) / base, 1), "%")

"""Uploads read from their header, with the studio's own message (issue #29, item 5); numbers typed past a
slider's ends, said (item 6). The browser side is tests/test_browser_uploads.py."""
from __future__ import annotations

import base64
import io
import json

import gradio as gr
import pytest
from PIL import Image

from ldm_core.limits import DEFAULT_LIMITS, Limits, image_problem, read_size
from tabs import uploads


def png(w: int, h: int, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, fmt)
    return buf.getvalue()


def test_a_file_that_is_not_an_image_is_named_with_what_is_expected(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("hello, not an image\n")
    said = image_problem(str(path), DEFAULT_LIMITS, name="x.png")
    assert said == "x.png is not an image (PNG, JPEG or WebP expected)"
    for data in (b"", b"\x89PNG\r\n\x1a\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>"):
        assert "is not an image" in image_problem(data, DEFAULT_LIMITS)


def test_too_many_pixels_says_the_size_and_what_is_accepted(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", DEFAULT_LIMITS.max_input_pixels)     # as the web server sets it
    data = png(3000, 3000)
    assert image_problem(data, DEFAULT_LIMITS, name="big.png") == (
        "big.png is 3000×3000, 9.0 megapixels; images up to 1.0 megapixels (e.g. 1024×1024) are accepted here")
    assert "up to 0.26 megapixels (e.g. 512×512)" in image_problem(data, DEFAULT_LIMITS, max_pixels=512 * 512)
    bomb = png(20_000, 20_000, "1")             # past PIL's own refusal (twice its cap): the size is still said
    assert "20000×20000, 400.0 megapixels" in image_problem(bomb, DEFAULT_LIMITS)
    assert image_problem(png(1024, 1024), DEFAULT_LIMITS) is None                      # the limit itself is fine


def test_bytes_over_the_limit_and_a_header_sent_alone():
    assert image_problem(b"\0" * 1_500_000, Limits(max_upload_bytes=1_000_000), name="a.png") == (
        "a.png is 1.5 MB; files up to 1 MB are accepted")
    head = png(3000, 3000)[:64]                 # what a browser sends of a file it opened: the size is in it
    assert "3000×3000" in image_problem(head, DEFAULT_LIMITS, size=30_000)
    assert "25.0 MB; files up to 20 MB" in image_problem(head, DEFAULT_LIMITS, size=25_000_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_pil_reads_gives_its_size_from_the_header(fmt):
    assert read_size(png(30, 20, fmt=fmt)) == (30, 20)


def test_an_upload_payload_is_checked_by_its_path_or_its_inline_data(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("nope")
    assert uploads.upload_problem({"path": str(path), "orig_name": "x<b>.png"}, DEFAULT_LIMITS) == (
        "xb.png is not an image (PNG, JPEG or WebP expected)")                     # no markup from a file name
    inline = "data:image/png;base64," + base64.b64encode(png(3000, 3000)).decode()
    assert "3000×3000" in uploads.upload_problem({"path": None, "url": inline}, DEFAULT_LIMITS)
    assert uploads.upload_problem(None, DEFAULT_LIMITS) is None


def test_checked_refuses_in_an_event_with_the_same_message_before_gradio_decodes(tmp_path):
    bad, good = tmp_path / "x.png", tmp_path / "ok.png"
    bad.write_text("nope")
    good.write_bytes(png(16, 16))
    with gr.Blocks():
        image = uploads.checked(gr.Image(type="filepath"), DEFAULT_LIMITS)
    payload = gr.components.image.ImageData(path=str(bad), orig_name="x.png")
    with pytest.raises(gr.Error, match=r"x\.png is not an image \(PNG, JPEG or WebP expected\)"):
        image.preprocess(payload)
    assert image.preprocess(gr.components.image.ImageData(path=str(good), orig_name="ok.png")) == str(good)


def test_the_upload_event_warns_and_empties_the_input(tmp_path, monkeypatch):
    bad = tmp_path / "x.png"
    bad.write_text("nope")
    with gr.Blocks() as demo:
        uploads.checked(gr.File(type="filepath"), DEFAULT_LIMITS)
    fn = next(f.fn for f in demo.fns.values() if "upload" in [t[1] for t in f.targets])
    said = []
    monkeypatch.setattr(gr, "Warning", said.append)
    assert fn({"path": str(bad), "orig_name": "x.png"}) is None and said == [
        "x.png is not an image (PNG, JPEG or WebP expected)"]
    ok = tmp_path / "ok.png"
    ok.write_bytes(png(8, 8))
    assert fn({"path": str(ok), "orig_name": "ok.png"}) is not None and len(said) == 1     # left as it is


def test_what_an_editor_sends_of_a_file_it_opened():
    def sent(data: bytes, name="f.png"):
        return json.dumps({"name": name, "bytes": len(data), "head": base64.b64encode(data[:1024]).decode()})
    assert uploads.editor_problem(sent(b"text", "x.png"), DEFAULT_LIMITS) == (
        "x.png is not an image (PNG, JPEG or WebP expected)")
    assert "3000×3000" in uploads.editor_problem(sent(png(3000, 3000)), DEFAULT_LIMITS)
    assert uploads.editor_problem(sent(png(64, 64)), DEFAULT_LIMITS) is None
    assert uploads.editor_problem("not json", DEFAULT_LIMITS) is None


def test_a_number_typed_past_a_sliders_ends_is_said_with_the_range():
    def sent(typed, lo=1, hi=100, label="Steps"):
        return json.dumps({"label": label, "typed": typed, "lo": lo, "hi": hi})
    assert uploads.slider_problem(sent("0")) == "Steps must be 1–100; 0 was changed to 1"
    assert uploads.slider_problem(sent("50", 1, 8, "Images")) == "Images must be 1–8; 50 was changed to 8"
    assert uploads.slider_problem(sent("7", 1, 8)) is None
    assert uploads.slider_problem("") is None

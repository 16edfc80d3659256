"""The x/y plot: one text->image parameter against another, as a labelled grid."""
from dataclasses import replace

import numpy as np
import pytest

from ldm_core.__main__ import main
from ldm_core.limits import DEFAULT_LIMITS
from ldm_core.provenance import read_parameters
from ldm_core.service import Service
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.compositions.xyplot import MIN_CELL, Axis, XYPlotRequest, cells
from ldm_core.requests import RequestError

BASE = Text2ImgRequest(prompt="a red circle", model="tiny-text2img", seed=4)


def test_cells_run_row_by_row_with_one_seed():
    xs, ys, reqs = cells(BASE, Axis("guidance_scale", "1, 4.5"), Axis("sampler", "DDIM, Euler a"))
    assert xs == [1.0, 4.5] and ys == ["DDIM", "Euler a"]
    assert [(r.guidance_scale, r.sampler, r.seed, r.num_images) for r in reqs] == [
        (1.0, "DDIM", 4, 1), (4.5, "DDIM", 4, 1), (1.0, "Euler a", 4, 1), (4.5, "Euler a", 4, 1)]


@pytest.mark.parametrize("x, y, match", [(Axis("colour", "1"), None, "unknown axis"),
                                         (Axis("steps", "a, b"), None, "steps takes int"),
                                         (Axis("steps", " , "), None, "give the values"),
                                         (Axis("sampler", "Heun"), None, "samplers are"),
                                         (Axis("seed", "1"), Axis("seed", "2"), "must be different"),
                                         (Axis("seed", "1,2,3,4,5"), Axis("steps", "1,2,3,4"), "at most 16")])
def test_bad_axes_say_what_is_wrong(x, y, match):
    with pytest.raises(RequestError, match=match):
        cells(BASE, x, y)


def test_the_grid_holds_every_cell_and_records_the_axes(service, stack, tmp_path):
    r = service.run(XYPlotRequest(BASE, Axis("steps", "1, 2, 3"), Axis("seed", "7, 8")))
    grid = r.images[0]
    assert grid.width >= 3 * MIN_CELL and grid.height >= 2 * MIN_CELL
    assert r.info["xyplot"] == {"x_axis": "steps", "x_values": [1, 2, 3], "y_axis": "seed", "y_values": [7, 8],
                                "seeds": [7, 7, 7, 8, 8, 8], "grid_size": f"{grid.width}x{grid.height}"}
    assert r.info["size"] == "32x32"          # a cell's size (what Reuse sets), not the grid's
    one = stack.run(replace(BASE, steps=2, seed=8)).images[0]                       # the cell (x=2, y=8) itself
    cell = np.asarray(grid)[-MIN_CELL:, -2 * MIN_CELL:-MIN_CELL]
    assert np.array_equal(cell, np.asarray(one.resize((MIN_CELL, MIN_CELL), 0)))
    assert read_parameters(stack.save(r, tmp_path)[0])["xyplot"]["x_axis"] == "steps"


def test_a_plot_over_the_compute_budget_is_refused_before_any_cell_runs(tiny_catalog):
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_work=0.01))
    assert 4 * 32 * 32 * 4 / 1e6 > 0.01 > 32 * 32 * 4 / 1e6        # each cell fits, the four do not
    with pytest.raises(RequestError, match=r"asks for 0\.0\d* megapixel-steps \(4 cells of 32x32"):
        s.run(XYPlotRequest(BASE, Axis("seed", "1, 2, 3, 4")))
    assert not s.stack._resident                                          # nothing was loaded, let alone run


def test_xyplot_from_the_command_line(tiny_catalog, tmp_path, capsys):
    assert main(["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(tmp_path), "xyplot", "a",
                 "--model", "tiny-text2img", "--x-axis", "guidance_scale", "--x-values", "1, 3"]) == 0
    path = next(p for p in capsys.readouterr().out.split() if p.endswith(".png"))
    assert read_parameters(path)["xyplot"]["x_values"] == [1.0, 3.0]


def test_one_deadline_covers_every_cell_of_a_plot(tiny_catalog, monkeypatch):
    """Each cell fits the time limit alone; the plot does not, and stops (a clock that ticks a second a step)."""
    import ldm_core.limits as L
    clock = iter(range(10_000))
    monkeypatch.setattr(L.time, "perf_counter", lambda: float(next(clock)))
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_seconds=10))
    s.run(replace(BASE, steps=4))                                   # one cell: 4 steps, 4 "seconds"
    with pytest.raises(L.TimeLimit, match="this server allows 10 s"):
        s.run(XYPlotRequest(replace(BASE, steps=4), Axis("seed", "1, 2, 3, 4")))


def test_the_deadline_is_checked_before_each_image_the_autoencoder_decodes(tiny_catalog, monkeypatch):
    """A request whose steps end inside the limit but whose decode starts past it stops there, with a message."""
    import ldm_core.limits as L
    import ldm_core.pipelines.latents as latents
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_seconds=30))
    s.run(replace(BASE, steps=2))                                   # loaded: the decoder has its check
    decode = latents.decode_latents

    def late_decode(vae, z):                                        # the clock jumps past the deadline here
        clock = L.time.perf_counter() + 3600
        monkeypatch.setattr(L.time, "perf_counter", lambda: clock)
        return decode(vae, z)
    for module in ("text2img",):
        monkeypatch.setattr(f"ldm_core.pipelines.{module}.decode_latents", late_decode)
    with pytest.raises(L.TimeLimit, match="stopped while decoding: this server allows 30 s"):
        s.run(replace(BASE, steps=2))
    monkeypatch.undo()
    assert s.run(replace(BASE, steps=2)).images                      # the next request has its own deadline


def test_prompt_search_and_replace_swaps_the_first_value_for_each():
    base = replace(BASE, prompt="a red circle, big", negative_prompt="red blur")
    xs, _, reqs = cells(base, Axis("prompt_sr", "red| blue |{green|cyan}"), Axis("steps", "2"))
    assert xs == ["red", "blue", "{green|cyan}"]                 # "|" separates, not commas; braces kept whole
    assert [(r.prompt, r.negative_prompt) for r in reqs] == [
        ("a red circle, big", "red blur"), ("a blue circle, big", "blue blur"),
        ("a {green|cyan} circle, big", "{green|cyan} blur")]
    with pytest.raises(RequestError, match="prompt S/R looks for its first value 'square' in the prompt "
                                           "'a red circle, big', which does not contain it"):
        cells(base, Axis("prompt_sr", "square|circle"), None)


def test_a_prompt_plot_runs_and_its_axes_have_readable_names(service):
    from ldm_core.compositions.xyplot import axes_of, label
    r = service.run(XYPlotRequest(replace(BASE, steps=2), Axis("prompt_sr", "red|blue"),
                                  Axis("guidance_scale", "1, 3")))
    assert r.info["xyplot"]["x_axis"] == "prompt_sr" and r.info["xyplot"]["x_values"] == ["red", "blue"]
    assert label("guidance_scale") == "guidance scale (CFG)" and label("prompt_sr") == "prompt S/R"
    assert "prompt_sr" in axes_of(Text2ImgRequest) and all(" " not in a for a in axes_of(Text2ImgRequest))
    from ldm_core.tasks.unconditional import UnconditionalRequest
    assert "prompt_sr" not in axes_of(UnconditionalRequest)

"""The Shapes World renderer against its spec."""
import numpy as np
import pytest

from ldm_core.data.shapes import (
    CANVAS,
    CAPTION_FORMS,
    COLORS,
    GAP,
    MAX_SIZE,
    MIN_SIZE,
    PALETTE,
    RELATIONS,
    SHAPES,
    ShapeObject,
    draw_objects,
    relation_holds,
    render_batch,
    sample_scene,
)


def test_deterministic_per_seed():
    a, b = sample_scene(123), sample_scene(123)
    assert a.caption == b.caption and a.objects == b.objects
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, sample_scene(124).image) or a.caption != sample_scene(124).caption


@pytest.mark.parametrize("form,n", [("one", 1), ("two", 2), ("relation", 2), ("three", 3)])
def test_caption_forms(form, n):
    for seed in range(50):
        s = sample_scene(seed, form)
        assert len(s.objects) == n
        o = s.objects
        if form == "one":
            assert s.caption == f"a {o[0].color} {o[0].shape}"
        elif form == "two":
            assert s.caption == f"a {o[0].label} and a {o[1].label}"
        elif form == "relation":
            assert s.relation in RELATIONS
            assert s.caption == f"a {o[0].label} {s.relation} a {o[1].label}"
            assert relation_holds(o[0], o[1], s.relation)
        else:
            assert s.caption == f"a {o[0].label}, a {o[1].label} and a {o[2].label}"


def test_scene_geometry_follows_spec():
    for seed in range(300):
        s = sample_scene(seed)
        assert s.image.shape == (CANVAS, CANVAS, 3) and s.image.dtype == np.uint8
        for o in s.objects:
            assert MIN_SIZE <= o.size <= MAX_SIZE
            assert 0 <= o.x and o.x + o.size <= CANVAS and 0 <= o.y and o.y + o.size <= CANVAS
            assert o.color in COLORS and o.shape in SHAPES
            assert o.box == tuple(v / 64 for v in (o.x, o.y, o.x + o.size, o.y + o.size))
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                ax0, ay0, ax1, ay1 = a.box_px
                bx0, by0, bx1, by1 = b.box_px
                assert ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_fill_colour_white_background_and_antialiasing(shape):
    o = ShapeObject("blue", shape, 10, 10, 28)
    img = draw_objects([o])
    assert tuple(img[24, 24]) == PALETTE["blue"]          # centre is the exact palette colour
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[63, 63]) == (255, 255, 255)
    assert (img[10:38, 10:38] == 255).all(-1).any()  or shape == "square"  # non-square shapes leave white corners
    # anti-aliased: edge pixels take values between the fill and white
    blends = ((img != 255).any(-1) & (img != np.array(PALETTE["blue"])).any(-1)).sum()
    assert blends > 0 or shape == "square"  # an integer-aligned square has no partial pixels


def test_shape_geometry():
    tri = draw_objects([ShapeObject("red", "triangle", 0, 0, 28)])
    red = (tri == np.array(PALETTE["red"])).all(-1)
    assert red[26, 2:26].all() and not red[1, 2]            # base at the bottom, apex at the top centre
    assert red[2, 13] or red[2, 14]
    dia = (draw_objects([ShapeObject("red", "diamond", 0, 0, 28)]) == np.array(PALETTE["red"])).all(-1)
    assert dia[14, 1] and dia[1, 14] and not dia[1, 1]      # corners at the middles of the box edges


def test_render_batch_covers_all_forms():
    imgs, scenes = render_batch(range(200))
    assert imgs.shape == (200, 64, 64, 3)
    assert {s.form for s in scenes} == set(CAPTION_FORMS)

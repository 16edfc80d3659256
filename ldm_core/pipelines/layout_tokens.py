"""The token layout of the paper's layout-to-image model (§4.3, `layout2img-openimages256`): labelled
boxes -> the 92 token ids its BERT encoder reads (`cond_stage_key: coordinates_bbox`).

Written here from the rules of the code the model was trained with; no code is copied. Sources:

- [R] CompVis/retrieval-augmented-diffusion-models@1017f2b51d43ff530f178c72c460bbba83316da6:
  `rdm/data/openimages.py` (`OpenImagesBBoxTrain/Validation`, the classes the model's config names as
  `ldm.data.openimages.*`: `encode_bbox=True`), `rdm/data/openimages_bbox_helpers/openimages_bbox_base.py`
  (`OpenImagesBBoxBase` defaults: `no_tokens=8192`, `tok_no_max_relations=30` objects, `use_group_parameter=True`,
  `use_additional_parameters=True`, `random_object_order=True`, `tok_use_separator=False`) and
  `openimages_builder.py` (`CoordinatesBoundingBoxConditionalBuilder`).
- [T] CompVis/taming-transformers@3ba01b241669f5ade541ce990f7650a3b8f65318: the same rules in
  `taming/data/conditional_builder/objects_center_points.py` and `objects_bbox.py`, the same defaults in
  `configs/open_images_scene_images_transformer.yaml` (the same group's OpenImages scene-image setup).

The rules:

- Coordinates: a grid of `int(sqrt(8192))` = 90 sections a side; a point (x, y) in [0, 1] is the token
  `round(y * 89) * 90 + round(x * 89)` (Python's `round`, halves to even) [R, T `tokenize_coordinates`].
- An object is 3 tokens: its representation, the token of its top-left corner, that of its bottom-right
  corner [R, T `_make_table_of_contents` / `_make_object_descriptors`, `token_pair_from_bbox`].
- Its representation is `category_no + n_classes * flags`, flags a bit each: 1 group of, 2 occluded,
  4 depiction, 8 inside [R, T `object_representation`]. The studio's boxes set none of them (a user's
  box is one whole, plain object); `layout_tokens` takes them for completeness.
- Up to 30 objects, then padding triples of the pad token 8191 (`no_tokens - 1`) [R, T `none`].
- Two more tokens end the sequence: the crop's top-left and bottom-right corners (`encode_crop`). The boxes
  stay in the coordinates of the whole picture and the crop says which part of it the 256² training image
  shows [R `build`, encode_crop branch]. A user's layout is the whole picture: crop (0, 0, 1, 1) -> 0, 8099
  (training crops were square in pixels, so they covered the whole picture for square photos only: the
  layout is drawn as a square photo's; how the paper sampled its layout figures is not published).
- 30 * 3 + 2 = 92 tokens: the config's `max_seq_len`.
- Object order: shuffled at random for every training sample [R `random_object_order`], so no order
  carries meaning; the user's order is kept (the same layout always gives the same tokens).
- Classes: the 340 of `openimages_classes.txt` (how they were chosen and numbered is said there).

Not verifiable: `ldm.data.openimages` itself is not in CompVis/latent-diffusion; [R] is the same lab's
later release of that module (the class names and `coordinates_bbox` key match the config), so its
defaults are taken as the trained ones, and they agree with the taming config [T].
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NO_TOKENS = 8192                          # the BERT embedder's vocab_size; builder no_tokens
SECTIONS = int(math.sqrt(NO_TOKENS))      # 90 grid sections a side
PAD = NO_TOKENS - 1                       # 8191: an empty object slot
MAX_OBJECTS = 30
SEQ_LEN = 3 * MAX_OBJECTS + 2             # 92: the embedder's max_seq_len
FULL_CROP = (0.0, 0.0, 1.0, 1.0)          # x0, y0, x1, y1: the whole picture
FLAGS = {"group_of": 1, "occluded": 2, "depiction": 4, "inside": 8}
CLASS_FILE = Path(__file__).resolve().parent / "openimages_classes.txt"

Box = tuple[float, float, float, float]   # x0, y0, x1, y1 in [0, 1]


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]                # by category number
    mids: tuple[str, ...]
    merged: dict[str, str]                # a class the training data relabelled (lower case) -> the class it became

    def number(self, label: str) -> int:
        """The category number of a class name or a merged class's name, case-insensitive."""
        want = " ".join(label.split()).lower()
        want = self.merged.get(want, want)
        for i, name in enumerate(self.names):
            if name.lower() == want:
                return i
        raise UnknownLabel(label, self.close_names(label))

    def close_names(self, label: str, n: int = 5) -> list[str]:
        """Class names like `label`: those holding it as a word, then spelling neighbours."""
        want = " ".join(label.split()).lower()
        if not want:
            return []
        words = [name for name in self.names if want in name.lower().split() or name.lower() in want.split()]
        lower = {name.lower(): name for name in self.names}
        near = [lower[m] for m in difflib.get_close_matches(want, list(lower), n=n, cutoff=0.6)]
        return list(dict.fromkeys(words + near))[:n]


class UnknownLabel(ValueError):
    def __init__(self, label: str, close: list[str]):
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            " (it takes the names of 340 OpenImages classes, e.g. 'Person', 'Car', 'Tree')."
        super().__init__(f"this model does not know the label {label[:60]!r}{hint}")
        self.label, self.close = label, close


@lru_cache(maxsize=1)
def openimages_classes() -> ClassList:
    """The model's classes from `openimages_classes.txt`, checked to be numbered 0, 1, 2, ..."""
    names, mids, merged = [], [], {}
    for line in CLASS_FILE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        cols = line.split("\t")
        if cols[0] == "=":
            merged[cols[2].lower()] = cols[3].lower()
            continue
        if int(cols[0]) != len(names):
            raise ValueError(f"{CLASS_FILE.name}: class {cols[0]} out of order")
        mids.append(cols[1])
        names.append(cols[2])
    return ClassList(tuple(names), tuple(mids), merged)


def coordinate_token(x: float, y: float) -> int:
    """A point in [0, 1]² -> its grid token (row-major, 90 sections a side)."""
    return round(y * (SECTIONS - 1)) * SECTIONS + round(x * (SECTIONS - 1))


def corner_tokens(box: Box) -> tuple[int, int]:
    """A box (x0, y0, x1, y1) -> the tokens of its top-left and bottom-right corners (clamped to [0, 1])."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    return coordinate_token(x0, y0), coordinate_token(x1, y1)


def object_token(category_no: int, n_classes: int, **flags: bool) -> int:
    """A class and its flags (group_of, occluded, depiction, inside) -> its representation token."""
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown object flags {sorted(unknown)}; the flags are {', '.join(FLAGS)}")
    if not 0 <= category_no < n_classes:
        raise ValueError(f"category number {category_no} is not one of the {n_classes} classes")
    modifier = sum(bit for name, bit in FLAGS.items() if flags.get(name))
    return category_no + n_classes * modifier


def layout_tokens(objects: list[tuple[int, Box]], n_classes: int, crop: Box = FULL_CROP,
                  flags: list[dict] | None = None) -> list[int]:
    """Objects (category number, box) -> the 92 tokens: a triple per object in the given order, pad
    triples up to 30 objects, the crop's two corner tokens."""
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} boxes (the model reads {SEQ_LEN} tokens), got {len(objects)}")
    flags = [{}] * len(objects) if flags is None else flags
    if len(flags) != len(objects):
        raise ValueError(f"{len(flags)} sets of flags for {len(objects)} objects")
    out = []
    for (category_no, box), f in zip(objects, flags):
        out += [object_token(category_no, n_classes, **f), *corner_tokens(box)]
    out += [PAD] * (3 * (MAX_OBJECTS - len(objects)))
    return out + list(corner_tokens(crop))

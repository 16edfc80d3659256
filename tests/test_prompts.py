"""Prompt syntax (issue 29): A1111 weights, wildcards per image, and the token counter."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from ldm_core.loading import component_class
from ldm_core.pipelines.common import encode_prompts, text_limit, truncation_warnings
from ldm_core.prompts import (
    Chunk,
    PromptError,
    count_tokens,
    expand,
    parse_weights,
    wildcard_lists,
)
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.tasks.layout2img import Layout2ImgRequest
from ldm_core.tasks.text2img import Text2ImgRequest

BASE = Text2ImgRequest(prompt="a red circle", model="tiny-text2img", seed=11, steps=2)
# (folder, text encoder subfolder, its class): the built-in word-level tokenizer with a small CLIP
# encoder, CompVis' BertTokenizer with LDMBert, and Stable Diffusion's CLIP BPE tokenizer
ENCODERS = [("tiny-text2img", "text_encoder", ("transformers", "CLIPTextModel")),
            ("tiny-compvis-text2im", "bert", ("latent_diffusion", "LDMBertModel")),
            ("tiny-sd-inpaint", "text_encoder", ("transformers", "CLIPTextModel"))]


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("prompt, chunks", [
    ("a red circle", [Chunk("a red circle")]),
    ("a (red:1.3) circle", [Chunk("a "), Chunk("red", 1.3), Chunk(" circle")]),
    ("(red)", [Chunk("red", 1.1)]),
    ("[red]", [Chunk("red", 1 / 1.1)]),
    ("((red:2) circle:0.5)", [Chunk("red", 1.0), Chunk(" circle", 0.5)]),      # nesting multiplies
    (r"a \(red\) \[x\]", [Chunk("a (red) [x]")]),                             # escapes are literal
    ("ratio: 2", [Chunk("ratio: 2")]),
    ("", [Chunk("")]),
])
def test_weights_parse_as_a1111_writes_them(prompt, chunks):
    assert parse_weights(prompt) == chunks


@pytest.mark.parametrize("prompt, match", [("a (red circle", r"'\(' at character 3 is never closed"),
                                           ("a red] circle", r"'\]' at character 6 closes no '\['"),
                                           ("(red:1.2.3)", "is not a number"),
                                           ("(red:9)", "outside 0 to 5"),
                                           ("(red]", "closes no")])
def test_broken_weight_syntax_says_where(prompt, match):
    with pytest.raises(PromptError, match=match):
        parse_weights(prompt)


# ------------------------------------------------------------------ encoding, on every text encoder
def _encoder(tiny_catalog, folder, sub, cls):
    root = tiny_catalog.parent / folder
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    return tok, component_class(*cls).from_pretrained(root / sub).eval()


@pytest.mark.parametrize("folder, sub, cls", ENCODERS)
def test_a_prompt_without_weights_encodes_exactly_as_before(tiny_catalog, folder, sub, cls):
    tok, enc = _encoder(tiny_catalog, folder, sub, cls)
    prompts = ["a red circle", "", "blue square and a red circle left of a blue square"]
    ids = tok(prompts, padding="max_length", max_length=text_limit(tok, enc), truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(encode_prompts(tok, enc, prompts, "cpu"), enc(ids)[0])
        assert torch.equal(encode_prompts(tok, enc, ["a (red:1) circle"], "cpu"), enc(ids[:1])[0])


@pytest.mark.parametrize("folder, sub, cls", ENCODERS)
def test_a_weight_scales_its_tokens_and_the_mean_is_kept(tiny_catalog, folder, sub, cls):
    tok, enc = _encoder(tiny_catalog, folder, sub, cls)
    limit = text_limit(tok, enc)
    plain = tok(["a red circle"], padding="max_length", max_length=limit, truncation=True,
                return_tensors="pt").input_ids
    with torch.no_grad():
        base = enc(plain)[0][0]                                            # (L, D): the brackets are not read
        weighted = encode_prompts(tok, enc, ["a (red:1.5) circle", "a red circle"], "cpu")
    assert torch.equal(weighted[1], base)                                  # its batch neighbour is untouched
    ids, red = plain[0].tolist(), tok("red", add_special_tokens=False).input_ids     # (one token or several)
    at = next(k for k in range(len(ids)) if ids[k:k + len(red)] == red)
    w = torch.ones(limit, 1)
    w[at:at + len(red)] = 1.5                                             # "red" alone, times 1.5 ...
    centred = base.mean().abs() <= 1e-4 * base.abs().mean()              # (a final layer norm without bias)
    expected = base * w * (1 if centred else base.mean() / (base * w).mean())      # ... then back to the mean
    assert torch.allclose(weighted[0], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(weighted[0], base, rtol=1e-3, atol=1e-4)
    assert torch.allclose(weighted[0].mean(), base.mean(), rtol=1e-4, atol=1e-4 * base.abs().mean())


def test_a_mean_near_zero_is_not_restored_by_a_wild_factor():
    from ldm_core.prompts import reweight
    hidden = torch.tensor([[[1.0, -0.98], [0.5, -0.515]]])                # mean 0.00125: weighting flips its sign
    out = reweight(hidden, torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(out, hidden * torch.tensor([[[1.0], [2.0]]]))   # weighted, not rescaled by -0.5
    fine = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert torch.allclose(reweight(fine, torch.tensor([[1.0, 2.0]])).mean(), fine.mean())


def test_weights_change_the_image_and_weight_1_does_not(stack):
    plain = np.asarray(stack.run(BASE).images[0])
    assert np.array_equal(np.asarray(stack.run(replace(BASE, prompt="a (red:1) circle")).images[0]), plain)
    result = stack.run(replace(BASE, prompt="a (red:1.6) circle"))
    assert not np.array_equal(np.asarray(result.images[0]), plain)
    assert result.info["prompt"] == "a (red:1.6) circle"                   # recorded as typed


@pytest.mark.parametrize("model", ["tiny-compvis-text2im", "tiny-gligen"])
def test_weights_reach_the_hub_pipelines(stack, model):
    if model == "tiny-gligen":
        req = Layout2ImgRequest(prompt="a red circle", boxes='[{"label": "red circle", "box": [0, 0, 0.5, 0.5]}]',
                                model=model, seed=3, steps=2)
    else:
        req = replace(BASE, model=model)
    plain = np.asarray(stack.run(req).images[0])
    assert np.array_equal(np.asarray(stack.run(replace(req, prompt="a (red:1) circle")).images[0]), plain)
    assert not np.array_equal(np.asarray(stack.run(replace(req, prompt="a (red:2.5) circle")).images[0]), plain)


def test_a_broken_weight_is_a_request_error(stack):
    with pytest.raises(RequestError, match="never closed"):
        stack.run(replace(BASE, prompt="a (red circle"))


# ------------------------------------------------------------------ wildcards
def test_wildcards_pick_from_the_seed():
    picks = {expand("a {red|blue|green} __shapes__", s) for s in range(40)}
    assert len(picks) > 4 and all(p.split()[1] in ("red", "blue", "green") for p in picks)
    assert expand("a {red|blue} __shapes__", 5) == expand("a {red|blue} __shapes__", 5)
    assert expand("a {red|{cyan|magenta}} circle", 1).split()[1] in ("red", "cyan", "magenta")    # nested
    assert expand("a red circle", 5) == "a red circle"
    assert {"colours", "shapes"} <= set(wildcard_lists())


def test_an_unknown_list_names_the_folder_and_its_lists(tmp_path, monkeypatch):
    (tmp_path / "sizes.txt").write_text("# a comment\nbig\n\nsmall\n")
    monkeypatch.setenv("LDM_WILDCARDS_DIR", str(tmp_path))
    assert {expand("a __sizes__ circle", s) for s in range(20)} == {"a big circle", "a small circle"}
    with pytest.raises(PromptError, match=f"no wildcard list __colours__: the wildcard folder {tmp_path} has "
                                          f"__sizes__"):
        expand("a __colours__ circle", 1)


def test_each_image_uses_and_records_its_own_pick(service, stack, tmp_path):
    req = replace(BASE, prompt="a {red|blue|green|yellow} circle", num_images=4, seed=20)
    result = stack.run(req)
    used = [p["prompt"] for p in result.per_image]
    assert used == [expand(req.prompt, s) for s in (20, 21, 22, 23)] and len(set(used)) > 1
    assert result.info["prompts"] == used and result.info["prompt"] == req.prompt
    for i in (0, 1):                    # each image is what its own prompt and seed give alone
        alone = stack.run(replace(BASE, prompt=used[i], seed=20 + i)).images[0]
        assert np.array_equal(np.asarray(alone), np.asarray(result.images[i]))
    saved = read_parameters(stack.save(result, tmp_path)[1])
    assert saved["prompt"] == used[1] and saved["prompt_template"] == req.prompt and saved["seed"] == 21
    assert "prompt_template" not in stack.run(BASE).per_image[0]


def test_an_unknown_wildcard_is_a_request_error(service):
    with pytest.raises(RequestError, match="no wildcard list __nothing__.*__colours__"):
        service.run(replace(BASE, prompt="a __nothing__ circle"))


# ------------------------------------------------------------------ counting tokens
def test_the_weight_syntax_is_not_counted_and_the_cut_is_named():
    from ldm_core.text import build_tokenizer
    tok = build_tokenizer(8)                                               # <bos> + 6 words + <eos>
    assert count_tokens(tok, 8, "a (red:1.3) circle") == count_tokens(tok, 8, "a red circle")
    n = count_tokens(tok, 8, "a ((red)) circle left of a [blue] square")
    assert (n.used, n.limit, n.over, n.cut_off_text) == (8, 6, True, "blue square")
    warning, = truncation_warnings(tok, 8, ["a ((red)) circle left of a [blue] square"])
    assert "is 10 tokens long and this model reads 8" in warning and "'a red circle left of a' was cut" in warning


def test_the_service_counts_without_loading_the_model(tiny_catalog):
    from ldm_core.service import Service
    s = Service.from_catalog(tiny_catalog, device="cpu")
    n = s.count_tokens("text2img", None, "a (red:1.2) circle")
    assert (n.used, n.limit) == (3, 22)
    assert s.count_tokens("text2img", "tiny-compvis-text2im", "a red circle").limit == 14   # LDMBert: 16 positions
    assert not s.stack._resident
    with pytest.raises(RequestError, match="reads no text"):
        s.count_tokens("superres", None, "x")

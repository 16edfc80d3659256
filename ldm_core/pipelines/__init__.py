"""Task pipelines, diffusers-shaped: check_inputs -> prepare_latents -> numbered loop -> decode."""
from .common import SAMPLERS, GenerationCancelled, PipelineOutput, StepInfo
from .inpaint import InpaintPipeline
from .layout2img import GligenLayoutPipeline, Layout2ImgPipeline
from .superres import SuperResPipeline
from .text2img import Text2ImgPipeline

# catalog `pipeline` name -> class; each class's __init__ names the components it takes
PIPELINES = {
    "Text2ImgPipeline": Text2ImgPipeline,
    "Layout2ImgPipeline": Layout2ImgPipeline,
    "GligenLayoutPipeline": GligenLayoutPipeline,
    "SuperResPipeline": SuperResPipeline,
    "InpaintPipeline": InpaintPipeline,
}

# hub component names -> the names these pipelines use (CompVis LDMs call theirs vqvae/bert)
COMPONENT_ALIASES = {"vqvae": "vae", "bert": "text_encoder"}

__all__ = ["PIPELINES", "COMPONENT_ALIASES", "SAMPLERS", "GenerationCancelled", "PipelineOutput", "StepInfo",
           "Text2ImgPipeline", "Layout2ImgPipeline", "GligenLayoutPipeline", "SuperResPipeline", "InpaintPipeline"]

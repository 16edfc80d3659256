"""Task pipelines, diffusers-shaped, one module per task and no inheritance between them:
check_inputs -> prepare_latents -> numbered loop (`common.denoise`) -> decode. Which classes run
a task is said by its task module (`ldm_core.tasks.<task>.pipelines`)."""
from .common import SAMPLERS, GenerationCancelled, PipelineOutput, StepInfo

# hub component names -> the names these pipelines use (CompVis LDMs call theirs vqvae/bert)
COMPONENT_ALIASES = {"vqvae": "vae", "bert": "text_encoder"}

__all__ = ["COMPONENT_ALIASES", "SAMPLERS", "GenerationCancelled", "PipelineOutput", "StepInfo"]

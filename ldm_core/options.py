"""Names a request may carry, importable without torch or diffusers (the pipelines map them to
their implementations: `pipelines.common.SAMPLERS` has exactly these keys)."""
SAMPLER_NAMES = ("DDIM", "DPM++ 2M", "DPM++ 2M Karras", "Euler", "Euler a", "Model default")
MODEL_DEFAULT = "Model default"           # the scheduler the model was published with
DEFAULT_SAMPLER = "DPM++ 2M"
MASK_DOWNSAMPLING = ("max", "nearest")    # inpainting: how the mask reaches the latent grid

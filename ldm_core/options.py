"""Names a request may carry, importable without torch or diffusers. Each name is typed here
only; `pipelines.common.SAMPLERS` maps every sampler name to its implementation."""
# samplers
DDIM = "DDIM"
DPM_2M = "DPM++ 2M"
DPM_2M_KARRAS = "DPM++ 2M Karras"
EULER = "Euler"
EULER_ANCESTRAL = "Euler a"
MODEL_DEFAULT = "Model default"           # the scheduler the model was published with
SAMPLER_NAMES = (DDIM, DPM_2M, DPM_2M_KARRAS, EULER, EULER_ANCESTRAL, MODEL_DEFAULT)
DEFAULT_SAMPLER = DPM_2M

# inpainting: how the mask reaches the latent grid
MASK_MAX = "max"            # a latent cell repaints when any of its pixels does
MASK_NEAREST = "nearest"    # one pixel per latent cell decides, as diffusers does
MASK_DOWNSAMPLING = (MASK_MAX, MASK_NEAREST)

# speed-ups that change pixels a little (ldm_core/speedups.py); a request names those it wants
DEEPCACHE = "deepcache"     # reuse the UNet's deep features between steps (Ma et al. 2023)
BF16 = "bf16"               # the UNet in bfloat16, on CPUs that compute it natively
SPEEDUP_NAMES = (DEEPCACHE, BF16)
NO_SPEEDUPS = "none"

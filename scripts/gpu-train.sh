#!/usr/bin/env bash
# One short GPU session that continues every built-in model at once (they are small: one GPU
# runs four trainings side by side, each process feeding it from its own CPU cores).
#
#   MINUTES=6 scripts/gpu-train.sh runs/gpu        # what produced the committed models (one H200)
#
# Starts from the committed weights in models/ and writes, under the folder given:
#   t2i-xy/        text2img + layout, UNet widened to take coordinate maps (CoordConv)
#   t2i/           the same training without coordinate maps (the A/B baseline)
#   inpaint/       inpainting, continued
#   shapes-photo-autoencoder/ + superres/   the autoencoder fine-tuned on scenes + photo crops, then
#                                           4x super-resolution on its latents, scenes + photo crops
# and each run's log.jsonl / samples.png / loss.png. BENCH=1 first runs the GPU benchmark.
set -u
R=${1:-runs/gpu}
M=${MINUTES:-6}                 # minutes per text2img / inpaint training
AE_M=${AE_MINUTES:-2}           # photo autoencoder, then superres for the rest
SR_M=$(python3 -c "print(max(0.2, $M - $AE_M - 0.6))")
B=${BATCH:-256}
W=${WORKERS:-8}
T=${THREADS:-3}
mkdir -p "$R"
export PYTHONUNBUFFERED=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 OMP_WAIT_POLICY=PASSIVE
COMMON=(--batch-size "$B" --warmup 100 --steps 1000000 --max-minutes "$M" --sample-minutes 2
        --checkpoint-minutes 2 --threads "$T" --autoencoder models/shapes-autoencoder)
T2I=(--num-scenes "${SCENES:-200000}" --latent-cache "$R/latents.safetensors" --layout-fraction 0.5 --lr 5e-4)

if [ "${BENCH:-0}" = 1 ]; then
  timeout "${BENCH_S:-130}" python3 bench/gpu.py --out "$R/results-cuda.json" --budget-s 90 > "$R/bench.log" 2>&1 &
fi
# one latent cache for the three text-conditioned runs (the shared autoencoder's latents)
python3 - "$R" "${SCENES:-200000}" "$W" <<'EOF'
import sys, torch
from pathlib import Path
from diffusers import AutoencoderKL
from ldm_core.train.latents import build_latent_cache
dev = "cuda" if torch.cuda.is_available() else "cpu"
vae = AutoencoderKL.from_pretrained("models/shapes-autoencoder").float().eval().to(dev)
build_latent_cache(vae, int(sys.argv[2]), Path(sys.argv[1]) / "latents.safetensors", workers=int(sys.argv[3]))
EOF
wait   # the benchmark, if any, has the GPU alone before training starts

python3 -m ldm_core.train text2img --out "$R/t2i-xy-run" --init-from models/shapes-text2img --coord-channels \
  --export "$R/t2i-xy" "${COMMON[@]}" "${T2I[@]}" > "$R/t2i-xy.log" 2>&1 &
python3 -m ldm_core.train text2img --out "$R/t2i-run" --init-from models/shapes-text2img \
  --export "$R/t2i" "${COMMON[@]}" "${T2I[@]}" > "$R/t2i.log" 2>&1 &
python3 -m ldm_core.train inpaint --out "$R/inpaint-run" --init-from models/shapes-inpaint --max-length 80 \
  --num-scenes "${SCENES:-200000}" --latent-cache "$R/latents.safetensors" --lr 3e-4 \
  --export "$R/inpaint" "${COMMON[@]}" --batch-size $((B / 2)) > "$R/inpaint.log" 2>&1 &
( python3 -m ldm_core.train autoencoder --out "$R/ae-run" --init-from models/shapes-autoencoder \
    --photo-fraction 0.5 --batch-size 64 --lr 2e-4 --steps 1000000 --disc-start 300 --max-minutes "$AE_M" \
    --sample-minutes 1 --checkpoint-minutes 2 --threads "$T" --export "$R/shapes-photo-autoencoder"
  python3 -m ldm_core.train superres --out "$R/superres-run" --autoencoder "$R/shapes-photo-autoencoder" \
    --init-from models/shapes-superres --photo-fraction 0.5 --num-scenes 60000 --workers "$W" \
    --batch-size "$B" --lr 3e-4 --warmup 100 --steps 1000000 --max-minutes "$SR_M" --sample-minutes 2 \
    --checkpoint-minutes 2 --threads "$T" --export "$R/superres" ) > "$R/photo.log" 2>&1 &
wait
nvidia-smi --query-gpu=name,memory.used --format=csv > "$R/gpu.txt" 2>&1 || true

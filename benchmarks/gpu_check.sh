#!/usr/bin/env bash
# The GPU measurements issues 17 and 19 wait for, as one device call (about 9 minutes on an H200).
#
# Prepared on CPU for the session that is lent a GPU (`device` tool; its README: one prepared script per call).
# Here, once (both folders are git-ignored through .git/info/exclude and travel only when carried):
#
#   printf '/.whl/\n/.filed/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       gymnasium==1.4.0 farama-notifications==0.0.6 starlette==1.10.0 uvicorn==0.55.0 python-multipart==0.0.34
#   mkdir -p .filed && git archive d3f2a57 wham_gym | tar -x -C .filed   # the engine issue 17 was filed on
#
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".filed"], timeout_s=590).
# What comes back ($OUT): step_ab_cuda.json (the filed engine against this tree's exact and diagonal decoding, one
# run), bench_cuda/ (exact against exact+compile, i.e. CUDA graphs, one run), serve_load_cuda.json (32 clients,
# our batching against the release's rule), log.txt. Copy them to benchmarks/results/ and write RESULTS.
# A CPU dry run of the same steps with the tiny model: GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh
set -uo pipefail

OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    DEVICE=cpu MODEL=tiny NS=1,2 STEPS=2 SECONDS_K32=4 MEM=0 T_AB=300 T_BENCH=300 T_SERVE=300
else
    DEVICE=cuda MODEL=default NS=1,8,64,128 STEPS=6 SECONDS_K32=30 MEM=2000 T_AB=150 T_BENCH=210 T_SERVE=170
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch, gymnasium, wham_gym; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || exit 1
date -u

# 1. Issue 17: the engine as filed against this tree, same device, alternating processes (no compile: each
#    fresh process would compile again). Ratios within this run.
echo "== step_ab: filed engine vs this tree ($DEVICE)"
timeout "$T_AB" python3 benchmarks/step_ab.py --device "$DEVICE" --base-dir .filed --model "$MODEL" --decode \
    --num-envs "$NS" --repeats 2 --steps "$STEPS" --arms base:exact,this:exact,this:diagonal \
    --out "$OUT/step_ab_cuda.json" || echo "step_ab: exit $?"

# 2. Issue 17: exact eager against exact compiled (CUDA graphs, mode reduce-overhead), one process, one run;
#    compile time is each row's warm-up (s). perf_hints logs any graph CUDA graphs had to skip, and why.
echo "== bench: exact vs exact+compile ($DEVICE)"; date -u
TORCH_LOGS=perf_hints timeout "$T_BENCH" python3 -m wham_gym bench --model "$MODEL" --device "$DEVICE" --modes exact,exact+compile \
    --num-envs "$NS" --steps "$STEPS" --warmup 2 --engine frames --no-reference --no-progress \
    --out "$OUT/bench_cuda" || echo "bench: exit $?"
date -u

# 3. Issue 19: 32 concurrent protocol clients, both batching rules, engine on the GPU.
echo "== serve_load: K = 32 ($DEVICE)"
timeout "$T_SERVE" python3 benchmarks/serve_load.py --device "$DEVICE" --model "$MODEL" --clients 32 \
    --seconds "$SECONDS_K32" --memory-requests "$MEM" --out "$OUT/serve_load_cuda.json" || echo "serve_load: exit $?"
date -u
ls -la "$OUT"

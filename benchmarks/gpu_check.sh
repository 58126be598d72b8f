#!/usr/bin/env bash
# GPU check: the paper preset's smoke run, then the training fast path, sampling and FID
# throughput (at most 12 minutes on one GPU, within a 15-minute machine with its start-up; no
# network; the smoke run's data, 32 MiB, is made here and removed at the end).
#
#   bash benchmarks/gpu_check.sh               # on a GPU machine: CIFAR-10 paper config (Table 6)
#   bash benchmarks/gpu_check.sh --cpu-smoke   # anywhere: tiny sizes on the CPU, checks it runs
#   options: --out PREFIX (default benchmarks/gpu_check[-cpu-smoke]) -> PREFIX.json, PREFIX.md,
#            PREFIX-smoke.json (section 0's summary)
#            --limits SMOKE,MAIN,FID  seconds for section 0, sections 1-3 and 4 (default
#            300,300,120; a section stopped at its limit keeps the figures it measured)
#
# Measures (each figure with its setting in the JSON):
#   0. the paper preset's smoke run (benchmarks/paper_smoke.py): Table 6's CIFAR-10 DDM trained
#      400 steps (bf16 + TF32) on 10,000 real 32x32 photo crops in CIFAR-10's format, the loss
#      falling; train and sample images/s written into ddm/data/throughput.yaml (`measured:`, the
#      plan's GPU figures from then on); a FID of 1,000 samples (Inception-v3 when its weights
#      are on the machine, else the digits classifier: the summary says which). The dry mode
#      (--cpu-smoke) runs the tiny network and writes a copy of the table under PREFIX-smoke/.
#   1. training images/s, CIFAR-10 paper U-Net (178M) at batch 128: fp32 (TF32 off), then each
#      fast-path option of ddm.training.TrainConfig alone, then all together (bf16 + tf32 +
#      channels_last + compile + pinned memory);
#   2. trainer / bare step: Trainer.step() (data draw, clipping, AdamW, LambdaLR, EMA) against a
#      bare forward + backward + AdamW.step loop on the same network and batch (goal <= 1.10);
#   3. sampling images/s at NFE 10 (ddm.experiment.generate, the paper's sampler) and the
#      sampler / bare network ratio (10 plain forward calls at the same batch; goal <= 1.05);
#   4. FID throughput of 10,000 samples (benchmarks/fid_digits.py: digits classifier; the
#      Inception extractor needs its weights file, which this check does not download);
#   5. with 2 or more GPUs: a 2-process NCCL training smoke test through torchrun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
MODE=gpu
OUT=
LIMITS=
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=cpu ;;
    --out) OUT=$2; shift ;;
    --limits) LIMITS=$2; shift ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --cpu-smoke, --out PREFIX, --limits MAIN,FID)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || OUT=benchmarks/gpu_check$( [ "$MODE" = cpu ] && echo -cpu-smoke )
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA device here; run with --cpu-smoke to check the script on the CPU" >&2
  exit 2
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
[ -n "$LIMITS" ] || LIMITS=$( [ "$MODE" = cpu ] && echo 300,600,240 || echo 300,300,120 )
IFS=, read -r SMOKE_LIMIT LIMIT FID_LIMIT <<< "$LIMITS"
if [ -z "$FID_LIMIT" ]; then
  echo "gpu_check.sh: --limits takes SMOKE,MAIN,FID seconds, got '$LIMITS'" >&2; exit 2
fi

# 0. the paper preset's smoke run (its data under $TMP, removed at the end)
SMOKE_OUT="$TMP/smoke"
[ "$MODE" = gpu ] || SMOKE_OUT="$OUT-smoke"
timeout "$SMOKE_LIMIT" "$PY" benchmarks/paper_smoke.py "$MODE" "$SMOKE_OUT" > "$TMP/smoke.txt" 2>&1 \
  || echo "paper_smoke.py failed or stopped (exit $?)" >> "$TMP/smoke.txt"
cp "$SMOKE_OUT/summary.json" "$OUT-smoke.json" 2>/dev/null || true   # its figures, beside PREFIX.json
[ "$MODE" = gpu ] || rm -rf "$SMOKE_OUT/data" "$SMOKE_OUT/checkpoints"

timeout "$LIMIT" "$PY" benchmarks/gpu_check.py "$MODE" "$TMP/main.json" \
  || echo "gpu_check.py stopped (exit $?): the figures measured before are kept" >&2

# FID throughput of 10,000 samples (digits extractor; --n smaller in the smoke run)
N=$( [ "$MODE" = cpu ] && echo 1000 || echo 10000 )
timeout "$FID_LIMIT" "$PY" benchmarks/fid_digits.py --n "$N" > "$TMP/fid.txt" 2>&1 || echo "fid_digits.py failed (exit $?)" >> "$TMP/fid.txt"

# 2-process NCCL smoke test
NCCL="skipped: fewer than 2 GPUs"
if [ "$MODE" = gpu ] && [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  cat > "$TMP/nccl.py" <<'EOF'
import sys, torch
sys.path.insert(0, "tests")
from test_training import ToyObjective, cfg_, make_data, make_model
from ddm.training import init_distributed, train
rank, world, _ = init_distributed()
assert torch.distributed.get_backend() == "nccl", torch.distributed.get_backend()
p = train(make_model(), ToyObjective(), make_data(), cfg_(steps=5), sys.argv[1], device="cuda",
          progress=False)
torch.distributed.destroy_process_group()
if rank == 0:
    print(f"NCCL ok: {world} processes, final checkpoint {p}")
EOF
  if timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 "$TMP/nccl.py" "$TMP/nccl" > "$TMP/nccl.txt" 2>&1; then
    NCCL=$(grep "NCCL ok" "$TMP/nccl.txt" || echo "NCCL ok")
  else
    NCCL="FAILED: $(tail -3 "$TMP/nccl.txt" | tr '\n' ' ')"
  fi
fi

"$PY" - "$TMP/main.json" "$TMP/fid.txt" "$NCCL" "$OUT" "$TMP/smoke.txt" <<'EOF'
import json, os, sys
res = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {"train": {}}
res["paper_smoke"] = open(sys.argv[5]).read().strip().splitlines()[-7:]
res["fid_digits"] = open(sys.argv[2]).read().strip().splitlines()[-6:]
res["nccl_two_process"] = sys.argv[3]
out = sys.argv[4]
json.dump(res, open(out + ".json", "w"), indent=1)
t = res["train"]
lines = [f"# gpu_check ({res.get('mode')}): {res.get('device')}, torch {res.get('torch')}", "",
         "Paper preset smoke run (benchmarks/paper_smoke.py):", ""] + ["    " + l for l in res["paper_smoke"]] + ["",
         f"{res.get('dataset')} U-Net, {res.get('parameters', 0) / 1e6:.2f}M parameters, batch {res.get('batch')}", "",
         "| training | images/s | vs fp32 | first steps (s) |", "|---|---|---|---|"]
for k, v in t.items():
    lines.append(f"| {k} | {v['images_per_s']:.1f} | {v['images_per_s'] / t['fp32']['images_per_s']:.2f} | {v['warmup_s']:.1f} |"
                 + (f" fell back: {v['compile_fell_back']}" if v.get("compile_fell_back") else ""))
lines.append("")
if "trainer_over_bare_step" in res:
    lines.append(f"- trainer / bare step (fp32): {res['trainer_over_bare_step']:.3f} (goal <= 1.10)")
if "sampling" in res:
    s = res["sampling"]
    lines.append(f"- sampling, NFE {s['nfe']}, batch {s['batch']}: {s['images_per_s']:.1f} images/s; "
                 f"sampler / bare network: {s['sampler_over_bare_network']:.3f} (goal <= 1.05)")
lines += [f"- 2-process NCCL: {res['nccl_two_process']}", "- FID (benchmarks/fid_digits.py):", ""]
lines += ["      " + l for l in res["fid_digits"]]
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

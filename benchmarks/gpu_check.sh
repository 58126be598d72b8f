#!/usr/bin/env bash
# GPU check of the training fast path, sampling and FID throughput (at most 8 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh               # on a GPU machine: CIFAR-10 paper config (Table 6)
#   bash benchmarks/gpu_check.sh --cpu-smoke   # anywhere: tiny sizes on the CPU, checks it runs
#   options: --out PREFIX (default benchmarks/gpu_check[-cpu-smoke]) -> PREFIX.json, PREFIX.md
#
# Measures (each figure with its setting in the JSON):
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
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=cpu ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --cpu-smoke, --out PREFIX)" >&2; exit 2 ;;
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
LIMIT=$( [ "$MODE" = cpu ] && echo 600 || echo 420 )

timeout "$LIMIT" "$PY" - "$MODE" "$TMP/main.json" <<'EOF'
import json, statistics, sys, time
import torch
from ddm.config import load_params, resolve
from ddm.experiment import build, generate
from ddm.nets import count_parameters
from ddm.training import Trainer, TrainConfig

mode, out = sys.argv[1], sys.argv[2]
gpu = mode == "gpu"
dev = torch.device("cuda" if gpu else "cpu")
params = load_params("params.yaml")
if gpu:
    params["preset"], dataset, batch, warm, timed, nfe_batch = "paper", "cifar10", 128, 3, 10, 256
else:  # tiny: the embedded digits config
    dataset, batch, warm, timed, nfe_batch = "digits", 8, 1, 3, 64
    torch.set_num_threads(1)
cfg = resolve(params, dataset, "ddm")
exp = build(cfg)
shape = (cfg["channels"], cfg["resolution"], cfg["resolution"])
data = torch.rand((max(batch * 4, 512),) + shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
res = {"mode": mode, "device": torch.cuda.get_device_name(0) if gpu else "cpu",
       "torch": torch.__version__, "dataset": dataset, "batch": batch}

def sync():
    if gpu:
        torch.cuda.synchronize()

def model():
    torch.manual_seed(0)
    return exp.make_model()

def train_rate(**opts):
    tcfg = TrainConfig(**{**cfg["train"], "batch_size": batch, "steps": 10**6, **opts})
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(model(), exp.objective, data, tcfg, d, device=dev, progress=False)
        tr.resume()
        t0 = time.perf_counter()
        for _ in range(warm):
            tr.step()
        sync()
        t1 = time.perf_counter()
        times = []
        for _ in range(timed):
            s = time.perf_counter(); tr.step(); sync(); times.append(time.perf_counter() - s)
        tr.check_finite()
    return {"images_per_s": batch / statistics.median(times), "step_s": statistics.median(times),
            "warmup_s": t1 - t0, "options": opts}

compile_backend = "inductor" if gpu else "eager"   # inductor on a CPU takes minutes
fast = dict(precision="bf16", tf32=True, channels_last=True, compile=True) if gpu else \
       dict(channels_last=True, compile=True, compile_backend=compile_backend)
variants = {"fp32": dict(pin_memory=False), "pin_memory": {}, "channels_last": dict(channels_last=True)}
if gpu:
    variants.update(tf32=dict(tf32=True), bf16=dict(precision="bf16"))
variants["compile"] = dict(compile=True, compile_backend=compile_backend)
variants["all"] = fast
res["parameters"] = count_parameters(model())
res["train"] = {}
for name, opts in variants.items():
    res["train"][name] = train_rate(**opts)
    print(f"train {name}: {res['train'][name]['images_per_s']:.1f} images/s", flush=True)

# trainer / bare step, fp32
net = model().to(dev).train()
opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
x0 = data[:batch]
g = torch.Generator().manual_seed(1)
bare = []
for i in range(warm + timed):
    s = time.perf_counter()
    noise = {k: v.to(dev) for k, v in exp.objective.draw(x0, g).items()}
    loss, _ = exp.objective(net, x0.to(dev), noise)
    loss.mean().backward(); opt.step(); opt.zero_grad(set_to_none=True); sync()
    if i >= warm:
        bare.append(time.perf_counter() - s)
res["trainer_over_bare_step"] = res["train"]["fp32"]["step_s"] / statistics.median(bare)
del net, opt

# sampling at NFE 10 against 10 bare network calls
net = model().to(dev).eval()
seeds = list(range(nfe_batch))
with torch.no_grad():
    generate(exp, net, 10, seeds[:8], batch_size=8, device=dev); sync()
    ts, tb = [], []
    xt, tt = torch.randn((nfe_batch,) + shape, device=dev), torch.full((nfe_batch,), 0.5, device=dev)
    for _ in range(3):
        s = time.perf_counter(); generate(exp, net, 10, seeds, batch_size=nfe_batch, device=dev); sync()
        ts.append(time.perf_counter() - s)
        s = time.perf_counter()
        for _ in range(10):
            net(xt, tt)
        sync(); tb.append(time.perf_counter() - s)
res["sampling"] = {"nfe": 10, "batch": nfe_batch,
                   "images_per_s": nfe_batch / statistics.median(ts),
                   "sampler_over_bare_network": statistics.median(ts) / statistics.median(tb)}
print(json.dumps(res["sampling"]), flush=True)
json.dump(res, open(out, "w"), indent=1)
EOF

# FID throughput of 10,000 samples (digits extractor; --n smaller in the smoke run)
N=$( [ "$MODE" = cpu ] && echo 1000 || echo 10000 )
timeout 240 "$PY" benchmarks/fid_digits.py --n "$N" > "$TMP/fid.txt" 2>&1 || echo "fid_digits.py failed (exit $?)" >> "$TMP/fid.txt"

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

"$PY" - "$TMP/main.json" "$TMP/fid.txt" "$NCCL" "$OUT" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
res["fid_digits"] = open(sys.argv[2]).read().strip().splitlines()[-6:]
res["nccl_two_process"] = sys.argv[3]
out = sys.argv[4]
json.dump(res, open(out + ".json", "w"), indent=1)
t = res["train"]
lines = [f"# gpu_check ({res['mode']}): {res['device']}, torch {res['torch']}", "",
         f"{res['dataset']} U-Net, {res['parameters'] / 1e6:.2f}M parameters, batch {res['batch']}", "",
         "| training | images/s | vs fp32 | first steps (s) |", "|---|---|---|---|"]
for k, v in t.items():
    lines.append(f"| {k} | {v['images_per_s']:.1f} | {v['images_per_s'] / t['fp32']['images_per_s']:.2f} | {v['warmup_s']:.1f} |")
s = res["sampling"]
lines += ["", f"- trainer / bare step (fp32): {res['trainer_over_bare_step']:.3f} (goal <= 1.10)",
          f"- sampling, NFE {s['nfe']}, batch {s['batch']}: {s['images_per_s']:.1f} images/s; "
          f"sampler / bare network: {s['sampler_over_bare_network']:.3f} (goal <= 1.05)",
          f"- 2-process NCCL: {res['nccl_two_process']}", "- FID (benchmarks/fid_digits.py):", ""]
lines += ["      " + l for l in res["fid_digits"]]
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

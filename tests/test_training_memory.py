"""The trainer's host memory grows with the batch, not with the data set.

``ddm train`` reads its data set memory-mapped (``ddm.contracts.load_images(..., mmap=True)``)
and in the model range one batch at a time (``ddm.datasets.ModelRangeImages``), not as a float32
copy of all of it (issue 32: 23.6 GB for CelebA-HQ at 256²). Measured in one fresh child
process (Linux ``/proc/self/status``), on a synthetic uint8 set at two sizes, 16x apart:

* loading the set adds no private (anonymous) memory: the file's pages are the page cache's;
* the training's peak (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the
  memory when it starts is the same at both sizes, while a float32 copy of the larger set (the
  old path, measured the same way as the control) adds all of it, and a 16x larger batch adds
  more than its own size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddm.io import save_torch

TESTS = Path(__file__).resolve().parent
SMALL, LARGE, SIDE = 1024, 16384, 32          # images of 1 x 32 x 32: 1 MiB and 16 MiB of uint8
IMAGE_F32 = SIDE * SIDE * 4                   # bytes of one float32 image

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from test_training import META, ToyObjective, cfg_, make_model
from ddm.contracts import load_images
from ddm.datasets import ModelRangeImages, to_model_range
from ddm.training import train


def kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def run(path, out, batch, full=False):
    anon = kb("RssAnon")
    u8 = load_images(path, "dataset file", "ddm prepare", mmap=True)
    load_kb = kb("RssAnon") - anon
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    start = kb("VmRSS")
    data = to_model_range(u8) if full else ModelRangeImages(u8)
    train(make_model(), ToyObjective(), data, cfg_(steps=3, batch_size=batch, warmup=0), out, model_meta=META,
          progress=False)
    return {"load_kb": load_kb, "peak_kb": kb("VmHWM") - start}


small, large, out = sys.argv[2:5]
run(small, out + "/warm", 16)  # one-time costs (kernels, thread pools) before anything is measured
print(json.dumps({"large": run(large, out + "/large", 16), "small": run(small, out + "/small", 16),
                  "big_batch": run(small, out + "/big_batch", 256),
                  "large_f32": run(large, out + "/large_f32", 16, full=True)}))
"""


def _images(path: Path, n: int) -> Path:
    g = torch.Generator().manual_seed(n)
    save_torch(torch.randint(0, 256, (n, 1, SIDE, SIDE), dtype=torch.uint8, generator=g), path)
    return path


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc (peak RSS reset)")
def test_trainer_peak_memory_grows_with_the_batch_not_the_data_set(tmp_path):
    small, large = _images(tmp_path / "small.pt", SMALL), _images(tmp_path / "large.pt", LARGE)
    r = subprocess.run([sys.executable, "-c", CHILD, str(TESTS), str(small), str(large), str(tmp_path)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    f32_gap_kb = (LARGE - SMALL) * IMAGE_F32 / 1024  # what a float32 copy of the set adds: 60 MiB
    # memory-mapped: the set's bytes are not private memory, at either size
    assert m["large"]["load_kb"] - m["small"]["load_kb"] < 0.05 * f32_gap_kb / 4, m
    # the training's peak does not follow the set: 16x the images, the same peak (within 5% of a copy)
    assert m["large"]["peak_kb"] - m["small"]["peak_kb"] < 0.05 * f32_gap_kb, m
    # ... which the measurement would see: the old float32 copy of the large set adds (nearly) all of it
    assert m["large_f32"]["peak_kb"] - m["large"]["peak_kb"] > 0.8 * LARGE * IMAGE_F32 / 1024, m
    # ... and the batch does move it: 256 images instead of 16 cost more than their own float32 size
    assert m["big_batch"]["peak_kb"] - m["small"]["peak_kb"] > (256 - 16) * IMAGE_F32 / 1024, m

"""Product checksums (``ddm.io``): every product carries a sha256 of its payload, written with the
file, and every reader verifies it.

For each product kind a real file is written by the project's own writer, bytes of the same count
are changed in place (the size unchanged, the file still parses: inside a tensor's storage in the
torch zip, a digit of a number in JSON, inside an array of the .npz with the zip's CRC made to
agree), and the subcommand that reads it must refuse it: exit 2, one line naming the file and the
fix, no traceback, no output. The table runs ``ddm.cli.main`` in this process (as
tests/test_bad_inputs.py does); one case also runs the real ``ddm`` process.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from conftest import make_workdir, run_ddm
from ddm.digests import json_digest, payload_digest
from ddm.io import InputError, REBUILD, load_json, load_npz, load_torch, save_json, save_npz, save_torch, verify_product
from test_bad_inputs import ENV, run_main

USAGE = 2


# --------------------------------------------------------------------------- same-size corruption
def _member_data(path: Path, member: zipfile.ZipInfo) -> int:
    """Offset of ``member``'s (stored, uncompressed) data in the zip file ``path``."""
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        head = f.read(30)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return member.header_offset + 30 + name_len + extra_len


def _xor(path: Path, offset: int, count: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


def flip_torch(path: Path, count: int = 256) -> None:
    """XOR ``count`` bytes in the middle of the largest tensor storage of a torch zip file."""
    with zipfile.ZipFile(path) as z:
        member = max((m for m in z.infolist() if re.search(r"/data/\d+$", m.filename)), key=lambda m: m.file_size)
    count = min(count, member.file_size)
    _xor(path, _member_data(path, member) + (member.file_size - count) // 2, count)


def flip_npz(path: Path, name: str = "mu", count: int = 8) -> None:
    """XOR ``count`` bytes inside array ``name`` of an .npz and rewrite the zip's CRC-32 of it (local
    header and central directory), so the file still reads: only the checksum can tell."""
    with zipfile.ZipFile(path) as z:
        member = z.getinfo(f"{name}.npy")
        central = z.start_dir
    start = _member_data(path, member)
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<H", raw[start + 8:start + 10])[0]  # .npy format 1.0
    data = start + 10 + header_len
    count = min(count, start + member.file_size - data)
    _xor(path, data, count)
    raw = bytearray(path.read_bytes())
    crc = struct.pack("<I", zlib.crc32(raw[start:start + member.file_size]))
    raw[member.header_offset + 14:member.header_offset + 18] = crc
    entry = raw.index(b"PK\x01\x02", central)  # this member's central directory entry
    while raw[entry + 46:entry + 46 + len(member.filename)] != member.filename.encode():
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + 16:entry + 20] = crc
    path.write_bytes(bytes(raw))


def flip_json(path: Path, key: str) -> None:
    """Change the first digit of the first number after ``"key":`` (one byte, still valid JSON)."""
    text = path.read_text()
    m = re.search(rf'"{re.escape(key)}": \[?\s*-?(\d)', text)
    assert m, f"{key} not in {path}"
    i = m.start(1)
    path.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])


# --------------------------------------------------------------------------- real products
def _ddm(work: Path, argv: str) -> None:
    r = run_main(work, shlex.split(argv))
    assert r.returncode == 0, f"ddm {argv}:\n{r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A workdir with one good product of each kind, each written by its writer."""
    from ddm.config import resolve
    from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier
    from ddm.validation import load_params
    from ddm.experiment import build
    from ddm.io import file_checksum
    from ddm.modelfile import save_model

    work = make_workdir(tmp_path_factory.mktemp("checksums"))
    _ddm(work, "prepare --dataset digits --out data/prepared/digits.pt")
    exp = build(resolve(load_params(work / "params.yaml"), "digits", "ddm"))
    torch.manual_seed(0)
    save_model(work / "models" / "ddm.pt", exp, exp.make_model(), checkpoint="none")
    _ddm(work, "sample --dataset digits --method ddm --model models/ddm.pt --nfe 2 --num-samples 8 "
               "--out samples/ddm.pt")
    weights = work / "fid" / "digits_classifier.pt"  # `ddm extractor`'s two files, trained briefly
    acc = train_digits_classifier(weights, seed=0, epochs=2, min_accuracy=0)
    save_json({"extractor": DIGITS_CLASSIFIER, "weights": "fid/digits_classifier.pt", "test_accuracy": acc,
               "weights_sha256": file_checksum(weights)}, work / "fid" / "extractor.json")
    _ddm(work, "refstats --data data/prepared/digits.pt --extractor fid/extractor.json --out fid/reference.npz")
    _ddm(work, "evaluate --samples samples/ddm.pt --reference fid/reference.npz --extractor fid/extractor.json "
               "--dataset digits --method ddm --nfe 2 --repeat 0 --out metrics/nfe2-r0.json")
    _ddm(work, "stats --inputs metrics/nfe2-r0.json --out reports/metrics.json")
    _ddm(work, "prepare-task --task saliency --train tasks/train.pt --test tasks/test.pt")
    save_json({"task": "saliency", "method": "ddm", "nfe": 5, "repeat": 0, "metric": "mae", "value": 0.25,
               "num_samples": 4, "computed_at": "2026-01-01T00:00:00Z"}, work / "tasks" / "nfe5-r0.json")
    save_json({"nfe": 2, "num_samples": 4, "curves": {"ddm": {"t": [1.0, 0.5], "mse": [0.5, 0.25]}}},
              work / "curves" / "fig3.json")
    save_json({"dataset": "digits", "method": "ddm", "num_samples": 20, "extractor": DIGITS_CLASSIFIER,
               "rows": [{"step": 2, "nfe": 2, "fid": 31.5}]}, work / "curves" / "convergence.json")
    (work / "out").mkdir()
    return work


class Case(NamedTuple):
    product: str  # the good file (relative to the workdir)
    corrupt: object  # how: flip_torch / flip_npz / a JSON key
    argv: str  # the reader; BAD stands for the corrupt copy
    out: str  # what it would write


EVAL = ("evaluate --samples samples/ddm.pt --reference fid/reference.npz --extractor fid/extractor.json "
        "--dataset digits --method ddm --nfe 2 --repeat 0 --out out/m.json")
CASES = {
    "model-file": Case("models/ddm.pt", flip_torch, "sample --dataset digits --method ddm --model BAD --nfe 2 "
                       "--num-samples 4 --out out/s.pt", "out/s.pt"),
    "sample-set": Case("samples/ddm.pt", flip_torch, EVAL.replace("samples/ddm.pt", "BAD"), "out/m.json"),
    "prepared-data": Case("data/prepared/digits.pt", flip_torch,
                          "refstats --data BAD --extractor fid/extractor.json --out out/r.npz", "out/r.npz"),
    "task-split": Case("tasks/test.pt", flip_torch, "evaluate-task --task saliency --data BAD --samples-dir none "
                       "--methods ddm --sets 5:0 --out-dir out/tasks", "out/tasks"),
    "fid-reference": Case("fid/reference.npz", flip_npz, EVAL.replace("fid/reference.npz", "BAD"), "out/m.json"),
    "fid-extractor": Case("fid/extractor.json", "test_accuracy", EVAL.replace("fid/extractor.json", "BAD"),
                          "out/m.json"),
    "metric-file": Case("metrics/nfe2-r0.json", "fid", "stats --inputs BAD --out out/metrics.json",
                        "out/metrics.json"),
    "task-metric-file": Case("tasks/nfe5-r0.json", "value", "stats --inputs metrics/nfe2-r0.json --task-metrics BAD "
                             "--out out/metrics.json", "out/metrics.json"),
    "stats-metrics": Case("reports/metrics.json", "mean", "report --metrics BAD --out out/tables.tex",
                          "out/tables.tex"),
    "fig3-curves": Case("curves/fig3.json", "mse", "fig3-plot --curves BAD --out out/f.png", "out/f.png"),
    "convergence": Case("curves/convergence.json", "fid", "convergence-plot --inputs BAD --out out/c.png",
                        "out/c.png"),
}


def _corrupt_copy(work: Path, case: str) -> Path:
    c = CASES[case]
    bad = work / "bad" / case / Path(c.product).name
    bad.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / c.product, bad)
    size = bad.stat().st_size
    if isinstance(c.corrupt, str):
        flip_json(bad, c.corrupt)
    else:
        c.corrupt(bad)
    assert bad.stat().st_size == size and bad.read_bytes() != (work / c.product).read_bytes()
    return bad


def assert_refused(r: subprocess.CompletedProcess, sub: str, bad: Path) -> str:
    """Exit 2 and exactly one line on stderr: ``ddm <sub>: <file> changed ... <the fix>``."""
    out = f"rc={r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert r.returncode == USAGE, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ddm {sub}: "), out
    assert str(bad.relative_to(bad.parents[2])) in lines[0] or str(bad) in lines[0], out
    assert "changed after it was written" in lines[0] and REBUILD in lines[0], out
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_same_size_corruption_is_refused_by_its_reader(work, case):
    c = CASES[case]
    bad = _corrupt_copy(work, case)
    argv = shlex.split(c.argv.replace("BAD", str(bad.relative_to(work))))
    r = run_main(work, argv)
    assert_refused(r, argv[0], bad)
    assert not (work / c.out).exists(), "a refused input must write no output"
    assert verify_product(bad) is not None and verify_product(work / c.product) is None


def test_the_ddm_process_refuses_a_corrupt_model_file(work):
    """The real ``ddm sample`` process: one line on stderr, exit 2, no output (issue: it ran, exit 0)."""
    bad = _corrupt_copy(work, "model-file")
    r = run_ddm(work, *shlex.split(CASES["model-file"].argv.replace("BAD", str(bad.relative_to(work)))), env=ENV)
    line = assert_refused(r, "sample", bad)
    assert "model file" in line and "Traceback" not in r.stderr
    assert not (work / "out" / "s.pt").exists()


def test_the_good_products_pass_their_readers(work):
    """The fixture's files verify and the readers run on them: the refusals above are the flips'."""
    for c in CASES.values():
        assert verify_product(work / c.product) is None, c.product
    _ddm(work, "report --metrics reports/metrics.json --out out/good.tex")
    assert (work / "out" / "good.tex").is_file()


# --------------------------------------------------------------------------- missing checksums, raw pickles
def test_a_product_without_its_checksum_is_refused(work, tmp_path):
    old = tmp_path / "old.pt"
    torch.save(load_torch(work / "models" / "ddm.pt", "model file", "ddm train"), old)  # no digest
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(load_json(work / "metrics" / "nfe2-r0.json", "metric file", "ddm evaluate")))
    for path, argv in ((old, f"sample --dataset digits --method ddm --model {old} --nfe 2 --num-samples 4 "
                             f"--out out/s.pt"), (plain, f"stats --inputs {plain} --out out/metrics.json")):
        r = run_main(work, shlex.split(argv))
        assert r.returncode == USAGE, r.stderr
        line = r.stderr.strip().splitlines()
        assert len(line) == 1 and str(path) in line[0] and "no sha256 checksum" in line[0] and REBUILD in line[0]
        assert "no sha256 checksum" in verify_product(path)
    assert not (work / "out" / "s.pt").exists() and not (work / "out" / "metrics.json").exists()


def test_a_raw_pickle_model_shows_only_the_refusal(work, tmp_path):
    """torch's 2-line warning about the pickle protocol is not shown: only the one-line refusal."""
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"format": "ddm.model/1", "cfg": {}}, protocol=4))
    r = run_ddm(work, "sample", "--dataset", "digits", "--method", "ddm", "--model", str(raw), "--nfe", "2",
                "--num-samples", "4", "--out", "out/s.pt", env=ENV)
    assert r.returncode == USAGE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(raw) in lines[0] and "cannot be read" in lines[0], r.stderr
    assert "Warning" not in r.stderr and "weights_only" not in r.stderr


# --------------------------------------------------------------------------- the digest itself
def test_the_digest_is_stable_across_save_and_load_and_follows_every_value(tmp_path):
    payload = {"cfg": {"b": [1, 2.5, None, True, "x"], "a": (3, "y")}, "w": torch.arange(6.0).reshape(2, 3),
               "h": torch.ones(2, dtype=torch.bfloat16), "e": torch.zeros(0, 4), "flag": torch.tensor(True)}
    d = payload_digest(payload)
    save_torch(payload, tmp_path / "p.pt")
    back = load_torch(tmp_path / "p.pt", "file", "test")
    assert set(back) == set(payload) and payload_digest(back) == d
    assert torch.load(tmp_path / "p.pt", weights_only=True)["sha256"] == d  # the key beside the payload
    assert payload_digest(dict(reversed(list(payload.items())))) == d  # key order does not matter
    changed = {**payload, "w": payload["w"].clone()}
    changed["w"][1, 2] = 5.000001
    others = [changed, {**payload, "w": payload["w"].double()}, {**payload, "w": payload["w"].reshape(3, 2)},
              {**payload, "cfg": {**payload["cfg"], "a": [3, "y"]}}, {**payload, "cfg": {"b": payload["cfg"]["b"]}},
              {**payload, "flag": torch.tensor(False)},
              {**payload, "cfg": {**payload["cfg"], "b": [1, 2.5, None, 1, "x"]}}]  # True -> 1
    assert len({d, *(payload_digest(o) for o in others)}) == len(others) + 1
    x = torch.arange(12, dtype=torch.uint8).reshape(1, 1, 3, 4)  # a bare tensor (sample sets, data files)
    save_torch(x, tmp_path / "x.pt")
    assert torch.equal(load_torch(tmp_path / "x.pt", "file", "test"), x)
    # JSON: the digest of the object as it reads back; numbers are written as before
    obj = {"fid": 262.83, "n": 3, "nested": {"values": [1.5, 2.25]}, "nan": float("nan")}
    save_json(obj, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert '"fid": 262.83' in text and json.loads(text)["sha256"] == json_digest(json.loads(json.dumps(obj)))
    assert load_json(tmp_path / "m.json", "file", "test").keys() == obj.keys()
    assert json_digest({**obj, "fid": 262.84}) != json_digest(obj)
    # .npz: an extra entry
    save_npz(tmp_path / "r.npz", mu=np.arange(3.0), format=np.asarray("x"))
    arrays = load_npz(tmp_path / "r.npz", "file", "test")
    assert sorted(arrays) == ["format", "mu"] and np.array_equal(arrays["mu"], np.arange(3.0))
    with np.load(tmp_path / "r.npz") as z:
        assert str(z["sha256"]) == payload_digest(arrays)


def test_the_savers_refuse_the_reserved_names(tmp_path):
    for call in (lambda: save_torch({"sha256": 1}, tmp_path / "a.pt"),
                 lambda: save_torch({"payload": 1}, tmp_path / "b.pt"),
                 lambda: save_json({"sha256": 1}, tmp_path / "c.json"),
                 lambda: save_json([1], tmp_path / "d.json"),
                 lambda: save_npz(tmp_path / "e.npz", sha256=np.zeros(1))):
        with pytest.raises(ValueError, match="sha256"):
            call()
    assert not list(tmp_path.iterdir())


def test_verify_product(tmp_path):
    save_torch(torch.arange(4), tmp_path / "s.pt")
    save_json({"fid": 1.5}, tmp_path / "m.json")
    save_npz(tmp_path / "r.npz", mu=np.arange(4.0))
    for name in ("s.pt", "m.json", "r.npz"):
        assert verify_product(tmp_path / name) is None, name
    for name, text in (("f.png", b"\x89PNG"), ("t.tex", b"x"), ("c.csv", b"a,b\n"), ("r.pdf", b"%PDF")):
        (tmp_path / name).write_bytes(text)
        assert verify_product(tmp_path / name) is None, name  # kinds without a digest
    assert verify_product(tmp_path) is None  # a folder: each product in it
    flip_torch(tmp_path / "s.pt", 4)
    flip_json(tmp_path / "m.json", "fid")
    flip_npz(tmp_path / "r.npz")
    for name in ("s.pt", "m.json", "r.npz"):
        msg = verify_product(tmp_path / name)
        assert msg and str(tmp_path / name) in msg and "changed after it was written" in msg and REBUILD in msg
        assert "\n" not in msg
    assert verify_product(tmp_path) == verify_product(tmp_path / "m.json")  # the first in name order
    (tmp_path / "e.json").write_text("{")
    assert "not valid JSON" in verify_product(tmp_path / "e.json")
    with pytest.raises(InputError, match="changed after it was written"):
        load_json(tmp_path / "m.json", "metric file", "ddm evaluate")


def test_verify_product_reads_json_without_torch_or_numpy(tmp_path):
    save_json({"fid": 1.5}, tmp_path / "m.json")
    code = ("import sys, ddm.io; assert ddm.io.verify_product(sys.argv[1]) is None; "
            "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- the pipeline's DVC record
# A product corrupted after the run with its size and mtime kept stops `snakemake all` and `dvc repro`
# before any job, and dvc.lock stays as it was: tests/test_dvc.py (test_a_silently_corrupt_product_...).


def test_the_memo_of_verified_products_is_not_fooled_by_a_restored_mtime(tmp_path):
    """ddm.verified: a product verified once is remembered by its size, mtime, ctime and inode; a
    same-size flip with its mtime restored changes the ctime, so it is read again and refused."""
    from ddm.verified import first_corrupt

    p, memo = tmp_path / "m.pt", tmp_path / "memo.json"
    save_torch({"w": torch.arange(4096.0)}, p)
    assert first_corrupt([p, tmp_path / "not-yet.pt"], memo) is None
    assert json.loads(memo.read_text()) == {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns,
                                                                p.stat().st_ctime_ns, p.stat().st_ino]}
    st = p.stat()
    flip_torch(p, 4)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    bad = first_corrupt([p], memo)
    assert bad and str(p) in bad and "changed after it was written" in bad
    assert json.loads(memo.read_text()) == {}

"""The conditioned tasks on the paper's data sets (§5.1, Table 6; params.yaml's conditioned preset
`paper`): DIV2K super-resolution, DUTS saliency and CelebA-HQ inpainting, read through ddm.datasets from
small stand-in folders laid out as the official archives are, by `ddm prepare-task` as the pipeline
runs it (download step from `source:`, then the split), and the paper preset's graph.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, dry_run_jobs, make_workdir, run_ddm, run_snakemake, tiny_params, write_params
from ddm import masks, tasks
from ddm.conditioned import dataset_examples, load_split, make_split
from ddm.config import ConfigError, resolve_task
from ddm.validation import load_params, validate
from ddm.datasets import download_dataset, to_model_range
from ddm.io import save_torch
from test_data import _png, _zip_folder


def _div2k_mirror(tmp_path, size=(40, 36)):
    """Two train and one valid HR image of random pixels, zipped as DIV2K's official archives."""
    stage, mirror = tmp_path / "stage", tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for sub, names in [("DIV2K_train_HR", ["0001", "0002"]), ("DIV2K_valid_HR", ["0801"])]:
        for n in names:
            (stage / sub).mkdir(parents=True, exist_ok=True)
            images[n] = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(images[n]).save(stage / sub / f"{n}.png")
        _zip_folder(stage / sub, mirror / f"{sub}.zip")
    return mirror, images


def _duts_source(tmp_path):
    """DUTS-TR / DUTS-TE folders: 3 and 2 image/mask pairs; the masks have anti-aliased grey edges."""
    src = tmp_path / "duts-src"
    for split, n in (("TR", 3), ("TE", 2)):
        for i in range(n):
            _png(src / f"DUTS-{split}" / f"DUTS-{split}-Image" / f"ILSVRC_{i}.jpg", (16, 16), (20 * i, 90, 0))
            mask = np.zeros((16, 16), np.uint8)
            mask[4:12, 4:12] = 255
            mask[4:12, 12] = 100 + 60 * i            # an edge below or above half grey
            path = src / f"DUTS-{split}" / f"DUTS-{split}-Mask" / f"ILSVRC_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)
    return src


def _faces(tmp_path, n=7):
    src = tmp_path / "faces"
    for i in range(n):
        _png(src / f"{i:05d}.png", (8, 8), (30 * i, 255 - 30 * i, 7 * i))
    return src


def test_super_resolution_from_div2k(tmp_path):
    mirror, images = _div2k_mirror(tmp_path)
    root = tmp_path / "data"
    download_dataset("div2k", root, source=str(mirror))
    data = {"dataset": "div2k", "size": 16, "scale": 4, "n_train": None, "n_test": None, "seed": 0}
    train, test = (dataset_examples("super_resolution", s, data, root) for s in ("train", "test"))
    assert train["hr_uint8"].shape == (2, 3, 16, 16) and test["hr_uint8"].shape == (1, 3, 16, 16)
    top, left = (36 - 16) // 2, (40 - 16) // 2          # a centre crop at native scale
    assert np.array_equal(test["hr_uint8"][0].numpy().transpose(1, 2, 0), images["0801"][top:top + 16, left:left + 16])
    assert torch.equal(test["lr_uint8"], tasks.bicubic_down(test["hr_uint8"], 4))
    assert torch.equal(test["cond_uint8"], tasks.bicubic_up(test["lr_uint8"], 4))
    one = dataset_examples("super_resolution", "train", {**data, "n_train": 1}, root)
    assert torch.equal(one["hr_uint8"], train["hr_uint8"][:1])


def test_saliency_from_duts_binarises_the_masks(tmp_path):
    root = tmp_path / "data"
    download_dataset("duts", root, source=str(_duts_source(tmp_path)))
    data = {"dataset": "duts", "size": 16, "n_train": None, "n_test": None, "seed": 0}
    train, test = (dataset_examples("saliency", s, data, root) for s in ("train", "test"))
    assert train["image_uint8"].shape == (3, 3, 16, 16) and test["mask_uint8"].shape == (2, 1, 16, 16)
    assert set(train["mask_uint8"].unique().tolist()) == {0, 255}
    # the grey edge column: 100 -> background, 160 and 220 -> object
    assert train["mask_uint8"][:, 0, 4:12, 12].float().mean(dim=1).tolist() == [0.0, 255.0, 255.0]
    assert torch.equal(train["target"], to_model_range(train["mask_uint8"]))


def test_inpainting_from_celebahq_splits_by_a_fixed_permutation(tmp_path):
    root = tmp_path / "data"
    download_dataset("celebahq256", root, source=str(_faces(tmp_path)))
    data = {"dataset": "celebahq256", "size": 8, "n_train": 4, "n_test": 2, "seed": 0}
    train, test = (dataset_examples("inpainting", s, data, root) for s in ("train", "test"))
    assert train["image_uint8"].shape == (4, 3, 8, 8) and test["image_uint8"].shape == (2, 3, 8, 8)
    assert train["cond"].shape == (4, 4, 8, 8)            # masked image + mask
    red = lambda x: set(x[:, 0, 0, 0].tolist())  # noqa: E731: image i is red 30 i
    assert not red(train["image_uint8"]) & red(test["image_uint8"])
    assert len(red(train["image_uint8"]) | red(test["image_uint8"])) == 6  # 6 of the 7 faces
    assert torch.allclose(train["mean"], train["image_uint8"].double().mean(dim=(0, 2, 3)))
    again = dataset_examples("inpainting", "test", {**data, "seed": 5}, root)  # the seed moves masks, not images
    assert torch.equal(again["image_uint8"], test["image_uint8"]) and not torch.equal(again["mask"], test["mask"])
    assert torch.equal(test["mask"], masks.inpainting_masks(2, 8, 1))  # the test split's seed 2 seed + 1
    with pytest.raises(ValueError, match="leaves 1 for the test split"):
        dataset_examples("inpainting", "test", {**data, "n_train": 6, "n_test": None}, root)


def test_task_files_hold_uint8_and_reading_makes_the_model_tensors(tmp_path):
    drawn = {"saliency": (tasks.saliency_task("test", n=3, size=8, seed=1), {"size": 8}),
             "super_resolution": (tasks.sr_task("test", n=3, size=16, scale=4, seed=1), {"size": 16, "scale": 4}),
             "inpainting": (tasks.inpainting_task("test", n=3, size=8, seed=1), {"size": 8})}
    for task, (want, block) in drawn.items():
        data = {"n_train": 5, "n_test": 3, "seed": 0, **block}   # the test split draws with seed 2 * 0 + 1
        blob = make_split(task, "test", data)
        assert "target" not in blob and "cond" not in blob
        assert all(v.dtype == torch.uint8 for k, v in blob.items() if k.endswith("uint8"))
        save_torch(blob, tmp_path / f"{task}.pt")  # as `ddm prepare-task` writes it (with its checksum)
        read = load_split(tmp_path / f"{task}.pt", task, "test", data)
        assert torch.equal(read["target"], want["target"]) and torch.equal(read["cond"], want["cond"]), task


def _paper(conditioned=True):
    p = load_params(REPO / "params.yaml")
    p["preset"], p["conditioned"] = "paper", conditioned
    return p


def test_paper_preset_follows_table_6():
    p = _paper()
    validate(p)
    want = {  # Table 6: size, batch, lr, iterations, channels, multiplier, blocks
        "inpainting": (256, 48, 4e-5, 400000, 96, [1, 2, 4, 8], 2),
        "super_resolution": (512, 12, 5e-5, 400000, 128, [1, 2, 4, 4], 2),
        "saliency": (384, 16, 5e-5, 400000, 128, [1, 2, 4, 4], 2),
    }
    for task, (size, batch, lr, steps, ch, mult, blocks) in want.items():
        cfg = resolve_task(p, task, "ddm")
        m, t = cfg["model"], cfg["train"]
        assert (cfg["data"]["size"], t["batch_size"], t["lr"], t["steps"]) == (size, batch, lr, steps)
        assert t["lr_min"] == pytest.approx(lr / 10)             # Table 6: 1e-4~1e-5 style ranges
        assert (m["ch"], m["ch_mult"], m["num_blocks"], m["encoder"]) == (ch, mult, blocks, "swin_b")
        latent = size > 256                                   # §5.1: latent space above 256 px
        assert ("latent" in cfg) == latent and cfg["resolution"] == (size // 4 if latent else size)
    inp = resolve_task(p, "inpainting", "ddpm")
    assert (inp["channels"], inp["cond_channels"], inp["data"]["n_train"], inp["data"]["n_test"]) == (3, 4, 26000, 2000)


def test_a_dataset_that_a_task_does_not_read_is_refused():
    p = _paper()
    bad = copy.deepcopy(p)
    bad["conditioned_presets"]["paper"]["tasks"]["saliency"]["dataset"] = "div2k"
    with pytest.raises(ConfigError, match=r"tasks/saliency/dataset: 'div2k' is not a data set of this task \(allowed: duts\)"):
        validate(bad)
    bad = copy.deepcopy(p)
    del bad["presets"]["paper"]["celebahq256"]
    with pytest.raises(ConfigError, match=r"inpainting/size: 256: .*presets/paper/celebahq256 \(no celebahq256 block\)"):
        validate(bad)


def test_paper_preset_graph_prepares_tasks_from_their_data_sets(tmp_path):
    work = make_workdir(tmp_path / "work")
    write_params(work, _paper())
    r = run_snakemake(work, "-n", "all", timeout=300)
    assert r.returncode == 0, r.output[-3000:]
    jobs = dry_run_jobs(r.output)
    count = lambda rule: sum(1 for j in jobs if j[0] == rule)  # noqa: E731
    assert (count("prepare_task"), count("train_autoencoder"), count("train_task"), count("evaluate_task")) == (3, 2, 6, 3)
    r = run_snakemake(work, "-n", "-p", "results/metrics/tasks/inpainting/reference.json", timeout=300)
    assert "results/fid/celebahq256/reference.npz" in r.output  # inpainting's FID: CelebA-HQ's statistics


def test_prepare_task_fetches_its_data_set_from_source(tmp_path):
    mirror, _ = _div2k_mirror(tmp_path, size=(24, 20))
    params = tiny_params()
    params["conditioned_presets"]["embedded"]["tasks"]["super_resolution"] = {
        "dataset": "div2k", "source": str(mirror), "size": 16, "scale": 4, "n_train": None, "n_test": None}
    work = tmp_path / "work"
    work.mkdir()
    write_params(work, params)
    r = run_ddm(work, "prepare-task", "--task", "super_resolution", "--data-root", "data/raw",
                "--train", "train.pt", "--test", "test.pt")
    assert r.returncode == 0, r.output
    assert (work / "data/raw/downloads/DIV2K_train_HR.zip.sha256").is_file()
    cfg = resolve_task(params, "super_resolution", "ddm")
    test = load_split(work / "test.pt", "super_resolution", "test", cfg["data"])
    assert test["hr_uint8"].shape == (1, 3, 16, 16) and test["target"].dtype == torch.float32


def test_a_task_source_folder_is_a_dependency_of_the_dvc_download_stage(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "workflow"))
    import make_dvc_yaml

    params = tiny_params()
    params["conditioned_presets"]["embedded"]["tasks"]["super_resolution"].update(dataset="div2k", source="mirror/div2k")
    write_params(tmp_path, params)
    sources = make_dvc_yaml.source_deps(tmp_path / "params.yaml")
    assert sources == ["mirror/div2k"]
    stage = yaml.safe_load(make_dvc_yaml.render(make_dvc_yaml.load_phases(), sources))["stages"]["download"]
    assert "mirror/div2k" in stage["deps"]

"""The ``ddm`` command: thin adapters from files to ``ddm.*`` (one subcommand per pipeline step).

    ddm prepare    --dataset D --out data/D.pt                      dataset -> uint8 tensor file
    ddm extractor  --dataset D --out results/D/fid/extractor.json   FID feature extractor
    ddm refstats   --data data/D.pt --extractor ... --out ...npz    FID reference statistics
    ddm train      --dataset D --method M --data ... --out ...pt    train (resumes; SLURM-preemptible)
    ddm sample     --dataset D --method M --model ...pt --nfe N --repeat R --num-samples K --out ...pt
    ddm evaluate   --samples ... --reference ... --extractor ... --out ...json
    ddm stats      --inputs metrics/*.json --out reports/metrics.json
    ddm report     --metrics reports/metrics.json --out reports/tables.tex
    ddm figures / grid / fig3 / fig3-plot                            FID-vs-NFE, sample grids, Fig. 3

Every output is written atomically (temp file + rename); bad input fails with a message
naming the thing, the value and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

log = logging.getLogger("ddm")

#: Exit code of a usage / configuration error.
EXIT_USAGE = 2


def _params(args):
    from ddm.config import load_params

    return load_params(args.params)


def _load_u8(path: str | Path) -> torch.Tensor:
    x = torch.load(path, weights_only=True)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise SystemExit(f"{path}: expected a uint8 tensor (N, C, H, W) written by `ddm prepare` or `ddm sample`")
    return x


# -- steps ----------------------------------------------------------------------------------
def cmd_prepare(args) -> None:
    from ddm.data import DATASETS, download_dataset, load_dataset
    from ddm.io import save_torch

    params = _params(args)
    block = params["presets"][params["preset"]].get(args.dataset)
    if block is None:
        raise SystemExit(f"dataset '{args.dataset}' is not in preset '{params['preset']}'")
    options = {"resolution": block["resolution"]} if "resolution" in DATASETS[args.dataset].options else {}
    root = args.data_root
    if args.dataset == "imagefolder":  # the user's own folder, named by `source`
        root = block.get("source") or SystemExit("imagefolder needs `source: <folder of images>` in params.yaml")
        if isinstance(root, SystemExit):
            raise root
    elif DATASETS[args.dataset].resources:
        download_dataset(args.dataset, args.data_root, source=block.get("source"))
    images = load_dataset(args.dataset, root, "train", **options)
    save_torch(images.contiguous(), args.out)
    log.info("prepared %s: %s images of shape %s -> %s", args.dataset, images.shape[0], tuple(images.shape[1:]), args.out)


def cmd_extractor(args) -> None:
    from ddm import metrics
    from ddm.io import save_json

    params = _params(args)
    fid_cfg = params["presets"][params["preset"]][args.dataset]["fid"]
    name = fid_cfg["extractor"]
    out = Path(args.out)
    if name == metrics.DIGITS_CLASSIFIER:
        weights = out.with_name("digits_classifier.pt")
        acc = metrics.train_digits_classifier(weights, seed=params["seed"])
        info = {"extractor": name, "weights": str(weights), "test_accuracy": acc}
    else:
        weights = metrics.resolve_weights(name, fid_cfg.get("weights"))  # clear error if missing
        info = {"extractor": name, "weights": str(weights)}
    info["weights_sha256"] = metrics.sha256_file(weights)
    save_json(info, out)
    log.info("FID extractor %s: %s", name, info)


def _extractor(path) -> dict:
    with open(path) as f:
        return json.load(f)


def cmd_refstats(args) -> None:
    from ddm.metrics import reference_stats

    ex = _extractor(args.extractor)
    images = _load_u8(args.data)
    reference_stats(images, ex["extractor"], ex["weights"], args.out)
    log.info("reference statistics of %d images -> %s", images.shape[0], args.out)


def cmd_train(args) -> None:
    from ddm.config import resolve, resolved_hash
    from ddm.data import to_model_range
    from ddm.experiment import build
    from ddm.io import save_torch
    from ddm.training import TrainConfig, ema_model, init_distributed, train

    params = _params(args)
    cfg = resolve(params, args.dataset, args.method)
    exp = build(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed()
    data = to_model_range(_load_u8(args.data))
    expected = (cfg["channels"], cfg["resolution"], cfg["resolution"])
    if tuple(data.shape[1:]) != expected:
        raise SystemExit(f"{args.data}: images of shape {tuple(data.shape[1:])}, config expects {expected}")
    torch.manual_seed(cfg["train"]["seed"])
    model = exp.make_model()
    tcfg = TrainConfig(**cfg["train"])
    ckpt_dir = Path(args.checkpoints) / f"{args.method}-{resolved_hash(cfg)}"
    meta = {"model_kwargs": exp.model_kwargs, "config_hash": resolved_hash(cfg)}
    final = train(model, exp.objective, data, tcfg, ckpt_dir, device=args.device, model_meta=meta)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    ema_model(final, model)
    blob = {
        "format": "ddm.model/1",
        "cfg": cfg,
        "model_kwargs": exp.model_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "checkpoint": str(final),
    }
    save_torch(blob, args.out)
    if args.curve:  # the loss curve (metrics.csv of the trainer), for plots
        from ddm.io import atomic_write

        data = (ckpt_dir / "metrics.csv").read_bytes()
        atomic_write(args.curve, lambda f: f.write(data))
    log.info("trained %s on %s -> %s (EMA weights)", args.method, args.dataset, args.out)


def load_model(path: str | Path, device="cpu"):
    """(Experiment, EMA network in eval mode) from a file written by ``ddm train``."""
    from ddm.experiment import build
    from ddm.nets import UNet

    blob = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "ddm.model/1":
        raise SystemExit(f"{path} is not a model written by `ddm train`")
    exp = build(blob["cfg"])
    net = UNet(**blob["model_kwargs"]).to(device)
    net.load_state_dict(blob["state_dict"])
    return exp, net.eval()


def sample_seeds(repeat: int, num_samples: int) -> list[int]:
    """Seeds of FID repeat ``repeat``: disjoint blocks, the same for every method."""
    return [1_000_000 * (repeat + 1) + i for i in range(num_samples)]


def cmd_sample(args) -> None:
    from ddm.data import to_uint8
    from ddm.experiment import generate
    from ddm.io import save_torch

    from ddm.config import resolve, resolved_hash

    exp, net = load_model(args.model, args.device)
    cfg = resolve(_params(args), args.dataset, args.method)
    if resolved_hash(cfg) != resolved_hash(exp.cfg):
        raise SystemExit(f"{args.model} was trained with another config than params.yaml gives for "
                         f"{args.dataset}/{args.method}: retrain it (snakemake does so by itself)")
    exp.cfg["sampling"] = cfg["sampling"]  # sampling options come from params.yaml, not the model file
    seeds = sample_seeds(args.repeat, args.num_samples)
    x = generate(exp, net, args.nfe, seeds, batch_size=args.batch_size, device=args.device)
    save_torch(to_uint8(x.clamp(-1, 1)), args.out)
    log.info("%d samples at NFE %d -> %s", len(seeds), args.nfe, args.out)


def cmd_evaluate(args) -> None:
    from ddm.io import save_json
    from ddm.metrics import fid

    ex = _extractor(args.extractor)
    samples = _load_u8(args.samples)
    result = fid(samples, args.reference, ex["extractor"], ex["weights"])
    result.update({k: getattr(args, k) for k in ("dataset", "method", "nfe", "repeat")})
    save_json(result, args.out)
    log.info("FID %.3f (%d samples, %s) -> %s", result["fid"], result["num_samples"], result["extractor"], args.out)


def cmd_stats(args) -> None:
    from ddm.io import save_json
    from ddm.report import collect

    save_json(collect([Path(p) for p in args.inputs], _params(args)), args.out)


def cmd_report(args) -> None:
    from ddm.io import save_text
    from ddm.report import render_tables

    with open(args.metrics) as f:
        metrics = json.load(f)
    save_text(render_tables(metrics, Path(args.published)), args.out)


def cmd_figures(args) -> None:
    from ddm.report import fid_plot

    with open(args.metrics) as f:
        metrics = json.load(f)
    fid_plot(metrics, args.dataset, Path(args.out))


def cmd_grid(args) -> None:
    from ddm.report import sample_grid

    sample_grid(Path(args.samples), args.title, Path(args.out))


def cmd_fig3_plot(args) -> None:
    from ddm.report import fig3_plot

    fig3_plot(Path(args.curves), Path(args.out))


def cmd_fig3(args) -> None:
    from ddm.io import save_json
    from ddm.report import x0_mse_curve

    curves = {}
    for path in args.models:
        exp, net = load_model(path, args.device)
        curves[Path(path).stem] = x0_mse_curve(exp, net, args.nfe, sample_seeds(0, args.num_samples))
    save_json({"nfe": args.nfe, "num_samples": args.num_samples, "curves": curves}, args.out)


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(fn=fn)
        s.add_argument("--params", default="params.yaml", help="experiment config (default: params.yaml)")
        return s

    s = add("prepare", cmd_prepare, "dataset -> uint8 tensor file (downloads if needed)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--data-root", default="data")
    s.add_argument("--out", required=True)

    s = add("extractor", cmd_extractor, "FID feature extractor (trains the digits classifier)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)

    s = add("refstats", cmd_refstats, "FID reference statistics of a dataset file")
    s.add_argument("--data", required=True)
    s.add_argument("--extractor", required=True)
    s.add_argument("--out", required=True)

    s = add("train", cmd_train, "train one (dataset, method); resumes from its checkpoints")
    s.add_argument("--dataset", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--checkpoints", required=True, help="folder of per-config checkpoint folders")
    s.add_argument("--out", required=True)
    s.add_argument("--curve", help="also write the training curve (CSV) here")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    s = add("sample", cmd_sample, "draw samples from a trained model")
    s.add_argument("--dataset", required=True)
    s.add_argument("--method", required=True, help="a method of params.yaml (may be a solver variant)")
    s.add_argument("--model", required=True)
    s.add_argument("--nfe", type=int, required=True)
    s.add_argument("--repeat", type=int, default=0)
    s.add_argument("--num-samples", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    s = add("evaluate", cmd_evaluate, "FID of a sample file")
    s.add_argument("--samples", required=True)
    s.add_argument("--reference", required=True)
    s.add_argument("--extractor", required=True)
    for k in ("dataset", "method"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--nfe", type=int, required=True)
    s.add_argument("--repeat", type=int, required=True)
    s.add_argument("--out", required=True)

    s = add("stats", cmd_stats, "mean +- std over repeats and Table 1's t-test markers")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = add("report", cmd_report, "reports/tables.tex from reports/metrics.json")
    s.add_argument("--metrics", required=True)
    s.add_argument("--published", default="workflow/published.csv")
    s.add_argument("--out", required=True)

    s = add("figures", cmd_figures, "FID-vs-NFE plot of one dataset")
    s.add_argument("--metrics", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)

    s = add("grid", cmd_grid, "sample grid of a sample file")
    s.add_argument("--samples", required=True)
    s.add_argument("--title", default="")
    s.add_argument("--out", required=True)

    s = add("fig3-plot", cmd_fig3_plot, "plot of the Fig. 3 curves")
    s.add_argument("--curves", required=True)
    s.add_argument("--out", required=True)

    s = add("fig3", cmd_fig3, "Fig. 3: MSE of the predicted x0 against t")
    s.add_argument("--models", nargs="+", required=True)
    s.add_argument("--nfe", type=int, default=100)
    s.add_argument("--num-samples", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    from ddm.config import ConfigError
    from ddm.download import DownloadError
    from ddm.metrics import MissingWeightsError, ReferenceMismatchError
    from ddm.training import CheckpointError, NonFiniteLoss

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    threads = os.environ.get("DDM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        args.fn(args)
    except ConfigError as e:
        print(f"ddm {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DownloadError, MissingWeightsError, ReferenceMismatchError, CheckpointError, NonFiniteLoss,
            FileNotFoundError) as e:
        # Errors a user can act on: one clear message (run with -v for the traceback).
        if args.verbose:
            raise
        print(f"ddm {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

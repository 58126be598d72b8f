"""The ``ddm`` command: thin adapters from files to ``ddm.*`` (one subcommand per pipeline step).

    ddm prepare    --dataset D --out data/D.pt                      dataset -> uint8 tensor file
    ddm extractor  --dataset D --out results/D/fid/extractor.json   FID feature extractor
    ddm refstats   --data data/D.pt --extractor ... --out ...npz    FID reference statistics
    ddm train      --dataset D --method M --data ... --out ...pt    train (resumes; SLURM-preemptible)
    ddm sample     --dataset D --method M --model ...pt --nfe N --repeat R --num-samples K --out ...pt
    ddm evaluate   --samples ... --reference ... --extractor ... --out ...json
    ddm stats      --inputs metrics/*.json --out reports/metrics.json [--csv reports/metrics.csv]
    ddm report     --metrics reports/metrics.json --out reports/tables.tex [--claims reports/claims.tex]
    ddm report-pdf --template reports/report.tex.j2 --tables ... --metrics ... --out reports/report.pdf
    ddm figures / grid / fig3 / fig3-plot                            FID-vs-NFE, sample grids, Fig. 3
    ddm prepare-task / train-autoencoder / train-task / sample-task / evaluate-task / task-figure
                   the conditioned tasks of Tables 2 and 3 (`conditioned: true`; docs/conditioned.md)

Every output is written atomically (temp file + rename) and carries a sha256 of its payload
(``ddm.io``: model, sample, data and task files, FID statistics, metric JSON). Options,
params.yaml and input files are checked before any work (an input's checksum included), and an
output folder is checked to be writable.

Errors and exit codes (the same kind of error gives the same code in every subcommand):

    0   done
    1   runtime failure: a dataset download or FID weights file that is missing, an output that
        cannot be written (read-only folder, disk full), a training checkpoint that cannot be
        resumed, a non-finite training loss
    2   usage, configuration or input error: a bad option value, a device this machine lacks,
        params.yaml (YAML syntax with its line, schema, a sampler or grid that does not fit its
        process), an input file that is missing, empty, truncated or not what the step expects
        (format, shape, channels, resolution, dtype, JSON fields), or a product whose checksum
        does not verify (changed after it was written: delete it, `snakemake all` rebuilds it)
   75   training preempted (SIGTERM / SIGUSR1): a checkpoint was written; run again to resume

An expected error prints one line to stderr, ``ddm <subcommand>: <message>``, naming the thing,
the value and the fix (``-v`` adds the traceback). Any other exception is a bug: Python's
traceback and exit code 1. A failing command writes no output file and changes none.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from ddm.contracts import (check_metric_files, check_reference, check_task_metric_files, load_images, load_json,
                           load_sample_set)
# InputError: an option value or input file the command cannot use (exit code 2); OutputError: an
# output that cannot be written (exit code 1). Standard library only at import (torch inside)
from ddm.io import (InputError, OutputError, check_input_file as _input_file, check_output as _check_out, file_checksum,
                    save_json, save_text, save_torch, utc_timestamp, writing as _writing)
from ddm.modelfile import SEED_BLOCK, read_model, sample_seeds  # torch inside
from ddm.plugins import load_from as load_plugins  # standard library and PyYAML only
from ddm.shards import SAMPLE_BATCH  # standard library only

log = logging.getLogger("ddm")

#: Exit code of a runtime failure (missing download or weights, unwritable output, ...).
EXIT_FAILURE = 1
#: Exit code of a usage / configuration / input error.
EXIT_USAGE = 2
#: Exit code of a preempted training run (``ddm.training.PREEMPT_EXIT_CODE``, EX_TEMPFAIL).
EXIT_PREEMPTED = 75


# -- checks of options, inputs and outputs ---------------------------------------------------------
def _int_at_least(low: int, high: int | None = None):
    """argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low}..{high:,}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _nfe(text: str) -> int:
    """argparse type: an NFE >= 1 whose time grid fits in this machine's memory (``ddm.limits``)."""
    from ddm.limits import nfe_error
    from ddm.yamlio import ConfigError

    value = _int_at_least(1)(text)
    try:
        msg = nfe_error(value)
    except ConfigError as e:  # DDM_MEMORY that is not a size
        raise argparse.ArgumentTypeError(str(e)) from None
    if msg:
        raise argparse.ArgumentTypeError(msg)
    return value


def _device(name: str) -> str:
    """argparse type: a device this machine has (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{name}' is not a device name (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(f"'{name}': this machine has no CUDA device (use --device cpu)")
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(f"'{name}': this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"'{name}': MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"'{name}': device type '{dev.type}' is not supported (use cpu or cuda)")
    return name


def _params(args):
    from ddm.validation import load_params

    return load_params(args.params)


def _dataset_block(params, dataset: str) -> dict:
    from ddm.config import ConfigError, dataset_names

    if dataset not in params["presets"][params["preset"]]:
        raise ConfigError(f"dataset '{dataset}' is not in preset '{params['preset']}' "
                          f"(allowed: {', '.join(dataset_names(params))})")
    return params["presets"][params["preset"]][dataset]


def _save(save, obj, path) -> None:
    """``save(obj, path)`` (a writer of ``ddm.io``: atomic, with its checksum), an OS error as
    one line naming ``path``."""
    with _writing(path):
        save(obj, path)


# -- steps ----------------------------------------------------------------------------------------
def cmd_prepare(args) -> None:
    params = _params(args)
    block = _dataset_block(params, args.dataset)
    _check_out(args.out)
    from ddm.datasets import prepare_dataset

    images = prepare_dataset(args.dataset, block, args.data_root, f"presets/{params['preset']}/{args.dataset}")
    _save(save_torch, images.contiguous(), args.out)
    log.info("prepared %s: %s images of shape %s -> %s", args.dataset, images.shape[0], tuple(images.shape[1:]), args.out)


def cmd_extractor(args) -> None:
    params = _params(args)
    fid_cfg = _dataset_block(params, args.dataset)["fid"]
    name = fid_cfg["extractor"]
    out = _check_out(args.out)
    from ddm import digits_classifier, metrics  # torch-fidelity: imported once the checks passed (errors stay fast)

    if name == digits_classifier.DIGITS_CLASSIFIER:
        weights = out.with_name("digits_classifier.pt")
        _check_out(weights, "the classifier's weights file")
        with _writing(weights):
            acc = digits_classifier.train_digits_classifier(weights, seed=params["seed"])
        info = {"extractor": name, "weights": str(weights), "test_accuracy": acc}
    else:
        weights = metrics.resolve_weights(name, fid_cfg.get("weights"))  # clear error if missing
        info = {"extractor": name, "weights": str(weights)}
    info["weights_sha256"] = file_checksum(weights, memo=True)
    _save(save_json, info, out)
    log.info("FID extractor %s: %s", name, info)


def cmd_refstats(args) -> None:
    ex = load_json(args.extractor, "extractor")
    images = load_images(args.data, "dataset file", "ddm prepare", min_count=2, mmap=True)  # streamed if large
    _check_out(args.out)
    from ddm.fidstats import reference_stats  # torch-fidelity: once the checks passed

    with _writing(args.out):
        reference_stats(images, ex["extractor"], ex["weights"], args.out)
    log.info("reference statistics of %d images -> %s", images.shape[0], args.out)


def _default_device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_train(args) -> None:
    from ddm.config import resolve, resolved_hash

    params = _params(args)
    cfg = resolve(params, args.dataset, args.method)
    from ddm.datasets import to_model_range  # torch: once params.yaml passed (a config error stays fast)
    from ddm.experiment import build
    from ddm.fit import train_config

    tcfg = train_config(cfg, f"presets/{params['preset']}/{args.dataset}/train")
    exp = build(cfg)
    images = load_images(args.data, "dataset file", "ddm prepare", channels=cfg["channels"],
                         resolution=cfg["resolution"])
    if _fit(args, exp, tcfg, to_model_range(images), resolved_hash(cfg)):
        log.info("trained %s on %s -> %s (EMA weights)", args.method, args.dataset, args.out)


def _fit(args, exp, tcfg, data, config_hash: str) -> bool:
    """``ddm.fit.fit`` in the checkpoint folder of this config under --checkpoints, once the
    outputs are checked; False on the processes of a distributed run other than rank 0."""
    from ddm.fit import checkpoint_dir, fit

    for path, what in ((args.out, "--out"), (args.curve, "--curve")):
        if path:
            _check_out(path, what)
    ckpt_dir = checkpoint_dir(args.checkpoints, args.method, config_hash)
    _check_out(ckpt_dir / "probe", "--checkpoints")
    return fit(exp, data, tcfg, ckpt_dir, args.out, config_hash=config_hash, curve=args.curve,
               device=_default_device(args))


def _model_for(args, cfg: dict, load, config_hash, what: str):
    """(experiment, network) of --model on the device, checked to be trained with ``cfg`` (the
    resolved config of ``what`` in params.yaml), with ``cfg``'s sampling options."""
    exp, net = load(args.model, _default_device(args))
    if config_hash(cfg) != config_hash(exp.cfg):
        raise InputError(f"model file {args.model} was trained with another config than params.yaml gives for "
                         f"{what}: retrain it (snakemake does so by itself)")
    exp.cfg["sampling"] = cfg["sampling"]  # sampling options come from params.yaml, not the model file
    return exp, net


def cmd_sample(args) -> None:
    from ddm.config import resolve, resolved_hash

    cfg = resolve(_params(args), args.dataset, args.method)
    from ddm.limits import samples_error  # the set fits in this machine's memory

    if msg := samples_error(args.num_samples, cfg["channels"], cfg["resolution"]):
        raise InputError(f"--num-samples {args.num_samples}: {msg}")
    bounds = _shard_bounds(args)
    from ddm.experiment import load_model  # torch: once params.yaml passed
    from ddm.sampleset import sample_set

    exp, net = _model_for(args, cfg, load_model, resolved_hash, f"{args.dataset}/{args.method}")
    _check_out(args.out)
    images = None
    if cfg["sampling"]["denoiser"] == "posterior_mean":  # the sampler ceiling: its training images
        if not args.data:
            raise InputError(f"method '{args.method}' uses denoiser posterior_mean: pass its training images "
                             f"with --data (data/prepared/{args.dataset}.pt)")
        images = load_images(args.data, "dataset file", "ddm prepare", channels=cfg["channels"],
                             resolution=cfg["resolution"])
    x = sample_set(exp, net, args.nfe, args.repeat, args.num_samples, bounds=bounds, batch_size=args.batch_size,
                   device=_default_device(args), training_images=images)
    _save(save_torch, x, args.out)
    log.info("%d samples at NFE %d -> %s", len(x), args.nfe, args.out)


def _shard_bounds(args) -> tuple[int, int]:
    """[start, stop) of the samples this job draws: the whole set, or shard --shard of
    --shard-size samples (ddm.shards: whole batches, so the shards merge to the one-job set)."""
    from ddm.shards import shard_bounds, shard_size_error

    if args.shard is None:
        return 0, args.num_samples
    if args.shard_size is None:
        raise InputError(f"--shard {args.shard} needs --shard-size: pass the set's shard size (params.yaml shard_size)")
    why = shard_size_error(args.shard_size, args.batch_size)
    if why:
        raise InputError(f"--shard-size {why} (--batch-size {args.batch_size})")
    try:
        return shard_bounds(args.shard, args.num_samples, args.shard_size)
    except ValueError as e:
        raise InputError(f"--{e}") from None


def cmd_evaluate(args) -> None:
    from ddm.config import DATASET_CHANNELS
    from ddm.replicates import check_method

    params = _params(args)
    block = _dataset_block(params, args.dataset)
    check_method(params, args.method)  # a method of params, or a training-seed replicate of one
    ex = load_json(args.extractor, "extractor")
    # one file: the one-pass FID of its images; shards: one in memory at a time
    samples = load_sample_set(args.samples, channels=DATASET_CHANNELS.get(args.dataset), resolution=block["resolution"])
    from ddm.kid import reference_features

    ref_rows = reference_features(check_reference(args.reference), args.reference)  # KID's reference rows
    _check_out(args.out)
    from ddm.fidstats import score_set  # torch-fidelity: once the checks passed

    result = score_set(samples, args.reference, ex["extractor"], ex["weights"], ref_rows)
    result.update({k: getattr(args, k) for k in ("dataset", "method", "nfe", "repeat")})
    result["computed_at"] = utc_timestamp()  # provenance: when this FID was computed (reports' date)
    _save(save_json, result, args.out)
    log.info("FID %.3f (%d samples, %s) -> %s", result["fid"], result["num_samples"], result["extractor"], args.out)


def cmd_stats(args) -> None:
    params = _params(args)
    check_metric_files(args.inputs, params, args.params)
    check_task_metric_files(args.task_metrics or [])  # the conditioned tasks (Tables 2 and 3)
    _check_out(args.out)
    if args.csv:
        _check_out(args.csv, "--csv")
    from ddm.report.collect import collect_metrics, records_csv  # torch: once the checks passed

    metrics, records = collect_metrics(args.inputs, params, models=args.models or (), convergence=args.convergence,
                                       task_metrics=args.task_metrics)
    _save(save_json, metrics, args.out)
    if args.csv:
        _save(save_text, records_csv(records), args.csv)


def cmd_convergence(args) -> None:
    from ddm.config import resolve
    from ddm.experiment import load_model
    from ddm.generate import convergence_rows

    cfg = resolve(_params(args), args.dataset, args.method)
    blob = read_model(args.model)
    exp, net = load_model(args.model, _default_device(args), blob=blob)
    exp.cfg["sampling"] = cfg["sampling"]  # sampling options come from params.yaml, not the model file
    if not blob.get("snapshots"):
        raise InputError(f"model file {args.model} holds no snapshots: list its method under the preset's "
                         f"`convergence: methods` in params.yaml and train it again")
    ex = load_json(args.extractor, "extractor")
    check_reference(args.reference)
    _check_out(args.out)
    rows = convergence_rows(exp, net, blob["snapshots"], args.nfe, args.num_samples, args.reference, ex["extractor"],
                            ex["weights"], device=_default_device(args))
    _save(save_json, {"dataset": args.dataset, "method": args.method, "num_samples": args.num_samples,
                      "extractor": ex["extractor"], "rows": rows}, args.out)


def cmd_convergence_plot(args) -> None:
    from ddm.report.figures import convergence_plot

    for p in args.inputs:
        load_json(p, "convergence")
    _check_out(args.out)
    with _writing(args.out):
        convergence_plot([Path(p) for p in args.inputs], Path(args.out))


def cmd_report(args) -> None:
    from ddm.claims import render_report
    from ddm.report.tables import check_published_csv, nonfinite_cells

    metrics = load_json(args.metrics, "metrics")
    bad = nonfinite_cells(metrics)
    if bad:
        raise InputError(f"metrics file {args.metrics}: {bad[0]} is not a finite number"
                         f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}: a table cannot show it; "
                         "make it again with `ddm stats` from finite FIDs")
    published = check_published_csv(args.published)
    _check_out(args.out)
    fig3 = None
    if args.claims:  # a verdict per claim of the paper (ddm.claims); Fig. 3's curves by dataset (folder name)
        fig3 = {Path(f).parent.name: load_json(f, "fig3") for f in args.fig3}
        _check_out(args.claims)
    text, claims = render_report(metrics, published, fig3)
    _save(save_text, text, args.out)
    if args.claims:
        _save(save_text, claims, args.claims)


def cmd_report_pdf(args) -> None:
    from ddm.report.pdf import ReportError, build_report_pdf, no_latex_message

    load_json(args.metrics, "metrics")
    for path in (args.template, args.tables, *([args.claims] if args.claims else []), *args.figures):
        _input_file(path, "report input")
    _check_out(args.out)
    latex = None if args.latex == "none" else args.latex
    if latex is None:
        log.warning("%s", no_latex_message(args.out))
    try:
        with _writing(args.out):
            build_report_pdf(Path(args.template), Path(args.tables), Path(args.metrics), args.figures, Path(args.out), latex,
                             claims=Path(args.claims) if args.claims else None)
    except ReportError as e:
        raise OutputError(f"cannot build {args.out}: {e}") from None


def cmd_figures(args) -> None:
    from ddm.report.figures import fid_plot

    metrics = load_json(args.metrics, "metrics")
    if args.dataset not in metrics["datasets"]:
        raise InputError(f"metrics file {args.metrics} has no dataset '{args.dataset}' "
                         f"(it has: {', '.join(sorted(metrics['datasets'])) or 'none'})")
    _check_out(args.out)
    with _writing(args.out):
        fid_plot(metrics, args.dataset, Path(args.out))


def cmd_grid(args) -> None:
    from ddm.report.figures import sample_grid

    load_images(args.samples)
    _check_out(args.out)
    with _writing(args.out):
        sample_grid(Path(args.samples), args.title, Path(args.out))


def cmd_fig3_plot(args) -> None:
    from ddm.report.figures import fig3_plot

    load_json(args.curves, "fig3")
    _check_out(args.out)
    with _writing(args.out):
        fig3_plot(Path(args.curves), Path(args.out))


def cmd_fig3(args) -> None:
    from ddm.experiment import load_model
    from ddm.generate import x0_mse_curve

    models = [(Path(path).stem, *load_model(path, _default_device(args))) for path in args.models]
    _check_out(args.out)
    curves = {name: x0_mse_curve(exp, net, args.nfe, sample_seeds(0, args.num_samples)) for name, exp, net in models}
    _save(save_json, {"nfe": args.nfe, "num_samples": args.num_samples, "curves": curves}, args.out)


# -- conditioned tasks (Tables 2 and 3; ddm.conditioned) ---------------------------------------------
def _nfe_repeat(text: str) -> tuple[int, int]:
    """argparse type: a sample set ``NFE:REPEAT`` (e.g. 10:0)."""
    nfe, _, repeat = text.partition(":")
    if not (nfe.isdigit() and repeat.isdigit() and int(nfe) >= 1):
        raise argparse.ArgumentTypeError(f"'{text}' is not NFE:REPEAT (e.g. 10:0; NFE >= 1, repeat >= 0)")
    return int(nfe), int(repeat)


def _task_cfg(params: dict, task: str, method: str | None = None) -> dict:
    """The resolved config of ``task`` with ``method`` (default: the first conditioned method; the
    task's data block is the same for every method)."""
    from ddm.config import resolve_task

    return resolve_task(params, task, method or next(iter(params.get("conditioned_methods") or {}), ""))


def _split(path, cfg: dict, split: str, tensors: bool = True) -> dict:
    from ddm.conditioned import load_split

    return load_split(path, cfg["task"], split, cfg["data"], tensors=tensors)


def _set_file(folder, nfe: int, repeat: int, ext: str) -> Path:
    """The file of sample set (NFE, repeat) in a folder of ``sample-task`` / ``evaluate-task``."""
    return Path(folder) / f"nfe{nfe}-r{repeat}.{ext}"


def cmd_prepare_task(args) -> None:
    from ddm.conditioned import task_splits

    cfg = _task_cfg(_params(args), args.task)
    outs = {"train": _check_out(args.train, "--train"), "test": _check_out(args.test, "--test")}
    for split, blob in task_splits(args.task, cfg["data"], args.data_root):
        _save(save_torch, blob, outs[split])
        n = next(len(v) for k, v in blob.items() if k.endswith("_uint8"))
        log.info("%s %s split: %d examples -> %s", args.task, split, n, outs[split])


def cmd_train_autoencoder(args) -> None:
    """A latent task's KL autoencoder (§5.1; ``ddm.autoencoder.train_autoencoder``) -> model file + JSON."""
    from ddm.config import resolved_hash

    params = _params(args)
    cfg = _task_cfg(params, args.task)
    if "latent" not in cfg:
        raise InputError(f"the {args.task} task has no latent block in conditioned_presets/{params['preset']}/tasks: "
                         "it runs in pixel space and needs no autoencoder")
    out, metrics = _check_out(args.out), _check_out(args.metrics, "--metrics")
    folder = f"{args.task}-{resolved_hash(cfg, ('data', 'latent'))}"  # a changed block starts afresh
    ckpt_dir = _check_out(Path(args.checkpoints) / folder / "probe", "--checkpoints").parent
    from ddm.autoencoder import train_autoencoder  # torch: once checked

    train, test = _split(args.data, cfg, "train"), _split(args.test, cfg, "test")
    record = train_autoencoder(args.task, cfg["data"], cfg["latent"], train["target"], test["target"], ckpt_dir, out,
                               seed=params["seed"], device=_default_device(args))
    _save(save_json, record, metrics)
    log.info("%s autoencoder (f=%d, %d latent channels): reconstruction PSNR %.2f dB on %d test images -> %s",
             args.task, record["factor"], record["z_channels"], record["psnr"], record["num_samples"], out)


def cmd_train_task(args) -> None:
    from ddm.config import task_hash

    params = _params(args)
    cfg = _task_cfg(params, args.task, args.method)
    from ddm.conditioned import build_task, task_autoencoder, training_data  # torch: once params.yaml passed
    from ddm.fit import train_config

    tcfg = train_config(cfg, f"conditioned_presets/{params['preset']}/train (with tasks/{args.task}/train)")
    exp = build_task(cfg)
    split = _split(args.data, cfg, "train", tensors=False)  # uint8: training makes each batch's floats
    data = training_data(cfg, split, task_autoencoder(cfg, args.autoencoder))
    if _fit(args, exp, tcfg, data, task_hash(cfg)):
        log.info("trained %s on the %s task -> %s (EMA weights)", args.method, args.task, args.out)


def cmd_sample_task(args) -> None:
    from ddm.config import task_hash

    cfg = _task_cfg(_params(args), args.task, args.method)
    from ddm.conditioned import load_task_model, task_autoencoder  # torch: once params.yaml passed
    from ddm.generate import sample_sets

    exp, net = _model_for(args, cfg, load_task_model, task_hash, f"{args.task}/{args.method}")
    split = _split(args.data, cfg, "test")
    ae = task_autoencoder(cfg, args.autoencoder, _default_device(args))
    outs = {s: _check_out(_set_file(args.out_dir, *s, "pt"), "--out-dir") for s in args.sets}
    for (nfe, repeat), x in sample_sets(exp, net, split, outs, batch_size=args.batch_size,
                                        device=_default_device(args), autoencoder=ae):
        _save(save_torch, x, outs[nfe, repeat])
        log.info("%s/%s: %d samples at NFE %d (repeat %d) -> %s", args.task, args.method, len(x), nfe, repeat,
                 outs[nfe, repeat])


def cmd_evaluate_task(args) -> None:
    from ddm.conditioned import reference_record, set_records, task_fid

    cfg = _task_cfg(_params(args), args.task)
    split = _split(args.data, cfg, "test")
    files = {(m, s): Path(args.samples_dir) / m / _set_file("", *s, "pt") for m in args.methods for s in args.sets}
    samples = {k: load_images(p, min_count=2) for k, p in files.items()}
    fid = task_fid(cfg, args.reference, args.extractor)
    outs = {k: _check_out(Path(args.out_dir) / k[0] / _set_file("", *k[1], "json"), "--out-dir") for k in files}
    ref_out = _check_out(Path(args.out_dir) / "reference.json", "--out-dir")
    for (method, (nfe, repeat)), record in set_records(cfg, split, samples, fid):
        _save(save_json, record, outs[method, (nfe, repeat)])
        log.info("%s/%s NFE %d repeat %d: %s %.4f", args.task, method, nfe, repeat, cfg["metric"], record["value"])
    _save(save_json, reference_record(cfg, split, fid), ref_out)


def cmd_task_figure(args) -> None:
    from ddm.report.figures import task_figure

    cfg = _task_cfg(_params(args), args.task)
    split = _split(args.data, cfg, "test")
    if len(args.labels) != len(args.samples):
        raise InputError(f"{len(args.samples)} sample files but {len(args.labels)} labels: give one label per file")
    samples = [load_images(p) for p in args.samples]
    _check_out(args.out)
    with _writing(args.out):
        task_figure(split, samples, args.labels, Path(args.out), n=args.rows)


def _add_task_steps(sub) -> None:
    """The subcommands of the conditioned tasks (Tables 2 and 3)."""
    positive = _int_at_least(1)
    device = {"type": _device, "help": "cpu, cuda or cuda:N (default: cuda if there is one, else cpu)"}
    sets = {"type": _nfe_repeat, "nargs": "+", "required": True, "help": "sample sets NFE:REPEAT, e.g. 5:0 5:1 10:0"}
    s = _add(sub, "prepare-task", cmd_prepare_task, "a conditioned task's train and test splits (Tables 2, 3)",
             "task", "train", "test")
    s.add_argument("--data-root", default="data", help="data folder of a task that reads a data set (`dataset:`)")
    autoencoder = {"help": "a latent task's autoencoder (`ddm train-autoencoder`); required for one"}
    s = _add(sub, "train-autoencoder", cmd_train_autoencoder, "a latent task's KL autoencoder and its test-split "
             "reconstruction PSNR (§5.1)", "task", "data", "test", "out", "metrics")
    s.add_argument("--checkpoints", required=True, help="folder of per-task checkpoint folders")
    s.add_argument("--device", **device)
    s = _add(sub, "train-task", cmd_train_task, "train one (task, method) conditioned network; resumes",
             "task", "method", "data", "out")
    s.add_argument("--checkpoints", required=True, help="folder of per-config checkpoint folders")
    s.add_argument("--curve", help="also write the training curve (CSV) here")
    s.add_argument("--autoencoder", **autoencoder)
    s.add_argument("--device", **device)
    s = _add(sub, "sample-task", cmd_sample_task, "one sample per test condition for each sample set",
             "task", "method", "model", "data", "out-dir")
    s.add_argument("--autoencoder", **autoencoder)
    s.add_argument("--sets", **sets)
    s.add_argument("--batch-size", type=positive, default=256)
    s.add_argument("--device", **device)
    s = _add(sub, "evaluate-task", cmd_evaluate_task, "Table 2's metric of every sample set of a task, and the "
             "trivial references", "task", "data", "samples-dir", "out-dir")
    s.add_argument("--methods", nargs="+", required=True)
    s.add_argument("--sets", **sets)
    s.add_argument("--reference", help="FID reference statistics (inpainting)")
    s.add_argument("--extractor", help="FID extractor file (inpainting)")
    s = _add(sub, "task-figure", cmd_task_figure, "condition | samples | target, one row per test example",
             "task", "data", "out")
    s.add_argument("--samples", nargs="+", required=True)
    s.add_argument("--labels", nargs="+", required=True)
    s.add_argument("--rows", type=positive, default=8)


# -- parser ---------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other failure: ``ddm <subcommand>: <message>``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _add(sub, name: str, fn, help_: str, *required: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help_)
    s.set_defaults(fn=fn)
    s.add_argument("--params", default=os.environ.get("DDM_PARAMS") or "params.yaml",
                   help="experiment config (default: $DDM_PARAMS, else params.yaml; the Snakefile sets "
                        "DDM_PARAMS to the merged config when --config/--configfile override params.yaml)")
    for opt in required:
        s.add_argument(f"--{opt}", required=True)
    return s


def _add_steps(sub) -> None:
    """The subcommands of the data, training and sampling steps."""
    positive, count, samples = _int_at_least(1), _int_at_least(0), _int_at_least(1, SEED_BLOCK)
    device = {"type": _device, "help": "cpu, cuda or cuda:N (default: cuda if there is one, else cpu)"}

    s = _add(sub, "prepare", cmd_prepare, "dataset -> uint8 tensor file (downloads if needed)", "dataset", "out")
    s.add_argument("--data-root", default="data")
    _add(sub, "extractor", cmd_extractor, "FID feature extractor (trains the digits classifier)", "dataset", "out")
    _add(sub, "refstats", cmd_refstats, "FID reference statistics of a dataset file", "data", "extractor", "out")
    s = _add(sub, "train", cmd_train, "train one (dataset, method); resumes from its checkpoints",
             "dataset", "method", "data", "out")
    s.add_argument("--checkpoints", required=True, help="folder of per-config checkpoint folders")
    s.add_argument("--curve", help="also write the training curve (CSV) here")
    s.add_argument("--device", **device)
    s = _add(sub, "sample", cmd_sample, "draw samples from a trained model", "dataset", "model", "out")
    s.add_argument("--method", required=True, help="a method of params.yaml (may be a solver variant)")
    s.add_argument("--nfe", type=_nfe, required=True)
    s.add_argument("--repeat", type=count, default=0)
    s.add_argument("--num-samples", type=samples, required=True)
    s.add_argument("--batch-size", type=positive, default=SAMPLE_BATCH)
    s.add_argument("--shard", type=count, help="draw only shard K of the set: samples [K*S, (K+1)*S) (ddm.shards)")
    s.add_argument("--shard-size", type=positive, help="S, the samples per shard (with --shard)")
    s.add_argument("--data", help="training images (for `denoiser: posterior_mean`, the sampler ceiling)")
    s.add_argument("--device", **device)
    s = _add(sub, "convergence", cmd_convergence, "FID against training step from a model's snapshots",
             "dataset", "method", "model", "reference", "extractor", "out")
    s.add_argument("--nfe", type=_nfe, nargs="+", required=True)
    s.add_argument("--num-samples", type=samples, required=True)
    s.add_argument("--device", **device)
    s = _add(sub, "evaluate", cmd_evaluate, "FID of a sample set (one file, or its shards in order)", "reference",
             "extractor", "dataset", "method", "out")
    s.add_argument("--samples", nargs="+", required=True, help="the set's file, or its shard files (streamed)")
    s.add_argument("--nfe", type=positive, required=True)
    s.add_argument("--repeat", type=count, required=True)
    s = _add(sub, "fig3", cmd_fig3, "Fig. 3: MSE of the predicted x0 against t", "out")
    s.add_argument("--models", nargs="+", required=True)
    s.add_argument("--nfe", type=_nfe, default=100)
    s.add_argument("--num-samples", type=samples, default=64)
    s.add_argument("--device", **device)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ddm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)
    _add_steps(sub)
    _add_task_steps(sub)
    s = _add(sub, "stats", cmd_stats, "mean +- std over repeats and Table 1's t-test markers", "out")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--models", nargs="*", help="trained model files (Table 1's Param column)")
    s.add_argument("--csv", help="also write the metric files as one table, a row per sample set (CSV)")
    s.add_argument("--convergence", nargs="*", help="files of `ddm convergence`: the plateau check of each model")
    s.add_argument("--task-metrics", nargs="*", help="files of `ddm evaluate-task` (Tables 2 and 3): per sample "
                   "set, and each task's reference.json; and of `ddm train-autoencoder` (latent tasks)")
    s = _add(sub, "report", cmd_report, "reports/tables.tex from reports/metrics.json", "metrics", "out")
    s.add_argument("--published", help="published results shown beside the measured ones (default: the "
                   "package's ddm/data/published.csv)")
    s.add_argument("--claims", help="also write a verdict per claim of the paper (LaTeX; reports/claims.tex)")
    s.add_argument("--fig3", nargs="*", default=[], help="Fig. 3's curves (results/metrics/<dataset>/fig3.json), "
                   "the evidence of its claim in --claims")
    _add(sub, "figures", cmd_figures, "FID-vs-NFE plot of one dataset", "metrics", "dataset", "out")
    s = _add(sub, "report-pdf", cmd_report_pdf, "reports/report.pdf: tables and figures", "template", "tables",
             "metrics", "out")
    s.add_argument("--figures", nargs="*", default=[])
    s.add_argument("--latex", default="none", help="latexmk or pdflatex to use; none: a placeholder page")
    s.add_argument("--claims", help="reports/claims.tex (`ddm report --claims`), shown on the first page")
    s = _add(sub, "grid", cmd_grid, "sample grid of a sample file", "samples", "out")
    s.add_argument("--title", default="")
    _add(sub, "fig3-plot", cmd_fig3_plot, "plot of the Fig. 3 curves", "curves", "out")
    s = _add(sub, "convergence-plot", cmd_convergence_plot, "plot of FID against training step", "out")
    s.add_argument("--inputs", nargs="+", required=True)
    return p


#: Expected errors of the library -> exit code, looked up in ``sys.modules`` (a module that was
#: never imported raised nothing, and an early failure does not import torch to classify itself).
_EXPECTED = {
    ("ddm.yamlio", "ConfigError"): EXIT_USAGE,  # ddm.config's (params.yaml, its plug-ins)
    ("ddm.metrics", "ReferenceMismatchError"): EXIT_USAGE,
    ("ddm.download", "DownloadError"): EXIT_FAILURE,
    ("ddm.io", "MissingWeightsError"): EXIT_FAILURE,
    ("ddm.training", "CheckpointError"): EXIT_FAILURE,
    ("ddm.training", "NonFiniteLoss"): EXIT_FAILURE,
}


def _exit_code(e: BaseException) -> int | None:
    """The documented exit code of an expected error; None for a bug."""
    if isinstance(e, InputError):
        return EXIT_USAGE
    for (module, name), code in _EXPECTED.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return code
    return EXIT_FAILURE if isinstance(e, (OutputError, OSError)) else None


def _message(e: BaseException, params: str | None = None) -> list[str]:
    """The lines of an expected error (one, or one per params.yaml error reported at once); a
    config error names the params file the command read (``params``: --params or $DDM_PARAMS)."""
    if isinstance(e, OSError) and e.errno is not None and e.strerror:
        return [f"{e.strerror}" + (f": {e.filename}" if e.filename else "")]
    text = str(e).strip()
    if params and type(e).__name__ == "ConfigError":
        from ddm.yamlio import name_source

        text = name_source(text, params)
    return text.splitlines() or [type(e).__name__]


def _set_threads() -> None:
    """DDM_THREADS=N: N intra-op threads (before torch is imported, so `--help` stays fast)."""
    threads = os.environ.get("DDM_THREADS")
    if not threads:
        return
    if not threads.isdigit() or int(threads) < 1:
        raise InputError(f"environment variable DDM_THREADS='{threads}' is not a positive integer")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    else:
        os.environ["OMP_NUM_THREADS"] = threads


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (e.g. ddm.datasets' skipped or linked image files) as one log line, as
    the command's own warnings are; ``-v`` adds where it was raised."""
    where = f" ({filename}:{lineno})" if log.isEnabledFor(logging.DEBUG) else ""
    logging.getLogger("ddm").warning("%s%s", message, where)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system): what a job cost, which
    a loaded machine inflates far less than the wall time (ddm.plan's estimates are checked on it)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    warnings.showwarning = _show_warning
    try:
        _set_threads()
        load_plugins(args.params)  # params.yaml's plug-ins (ddm.plugins), also for a subcommand that reads no params
        args.fn(args)
        log.info("ddm %s done: %.1f s CPU", args.command, _cpu_seconds())
    except Exception as e:
        code = _exit_code(e)
        if code is None:
            raise  # a bug: Python's traceback
        if args.verbose:
            traceback.print_exc()
        for line in _message(e, getattr(args, "params", None)):
            print(f"ddm {args.command}: {line}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

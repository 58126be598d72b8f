"""The ``ddm`` subcommands of the conditioned tasks (Tables 2 and 3; ``ddm.conditioned``,
docs/conditioned.md): thin adapters, as those of ddm/cli.py."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ddm.cli_base import (add_command, default_device, int_at_least, model_for, parse_device, read_params, run_fit,
                          save_output)
from ddm.contracts import load_images
from ddm.io import InputError, check_output as _check_out, save_json, save_torch, writing as _writing

log = logging.getLogger("ddm")


def parse_nfe_repeat(text: str) -> tuple[int, int]:
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

    cfg = _task_cfg(read_params(args), args.task)
    outs = {"train": _check_out(args.train, "--train"), "test": _check_out(args.test, "--test")}
    for split, blob in task_splits(args.task, cfg["data"], args.data_root):
        save_output(save_torch, blob, outs[split])
        n = next(len(v) for k, v in blob.items() if k.endswith("_uint8"))
        log.info("%s %s split: %d examples -> %s", args.task, split, n, outs[split])


def cmd_train_autoencoder(args) -> None:
    """A latent task's KL autoencoder (§5.1; ``ddm.autoencoder.train_autoencoder``) -> model file + JSON."""
    from ddm.config import resolved_hash

    params = read_params(args)
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
                               seed=params["seed"], device=default_device(args))
    save_output(save_json, record, metrics)
    log.info("%s autoencoder (f=%d, %d latent channels): reconstruction PSNR %.2f dB on %d test images -> %s",
             args.task, record["factor"], record["z_channels"], record["psnr"], record["num_samples"], out)


def cmd_train_task(args) -> None:
    from ddm.config import task_hash

    params = read_params(args)
    cfg = _task_cfg(params, args.task, args.method)
    from ddm.conditioned import build_task, task_autoencoder, training_data  # torch: once params.yaml passed
    from ddm.fit import train_config

    tcfg = train_config(cfg, f"conditioned_presets/{params['preset']}/train (with tasks/{args.task}/train)")
    exp = build_task(cfg)
    split = _split(args.data, cfg, "train", tensors=False)  # uint8: training makes each batch's floats
    data = training_data(cfg, split, task_autoencoder(cfg, args.autoencoder))
    if run_fit(args, exp, tcfg, data, task_hash(cfg)):
        log.info("trained %s on the %s task -> %s (EMA weights)", args.method, args.task, args.out)


def cmd_sample_task(args) -> None:
    from ddm.config import task_hash, task_sampling_batch

    params = read_params(args)
    cfg = _task_cfg(params, args.task, args.method)
    from ddm.conditioned import load_task_model, task_autoencoder  # torch: once params.yaml passed
    from ddm.generate import sample_sets
    from ddm.setstore import SetStore, set_key, write_sets

    exp, net = model_for(args, cfg, load_task_model, task_hash, f"{args.task}/{args.method}")
    split = _split(args.data, cfg, "test")
    ae = task_autoencoder(cfg, args.autoencoder, default_device(args))
    outs = {s: _check_out(_set_file(args.out_dir, *s, "pt"), "--out-dir") for s in args.sets}
    batch = args.batch_size or task_sampling_batch(params)
    store = None
    if args.resume_dir:  # a set depends on the model, the test split, the autoencoder and the sampler
        store = SetStore(args.resume_dir, set_key([args.model, args.data, args.autoencoder], cfg["sampling"]))

    def sample(todo):
        return sample_sets(exp, net, split, todo, batch_size=batch, device=default_device(args), autoencoder=ae)

    def write(s, x):
        save_output(save_torch, x, outs[s])
        log.info("%s/%s: %d samples at NFE %d (repeat %d) -> %s", args.task, args.method, len(x), *s, outs[s])
        return outs[s]

    write_sets(outs, store, sample, write)


def cmd_evaluate_task(args) -> None:
    from ddm.conditioned import reference_record, set_records, task_fid

    cfg = _task_cfg(read_params(args), args.task)
    split = _split(args.data, cfg, "test")
    files = {(m, s): Path(args.samples_dir) / m / _set_file("", *s, "pt") for m in args.methods for s in args.sets}
    samples = {k: load_images(p, min_count=2) for k, p in files.items()}
    fid = task_fid(cfg, args.reference, args.extractor)
    outs = {k: _check_out(Path(args.out_dir) / k[0] / _set_file("", *k[1], "json"), "--out-dir") for k in files}
    ref_out = _check_out(Path(args.out_dir) / "reference.json", "--out-dir")
    for (method, (nfe, repeat)), record in set_records(cfg, split, samples, fid):
        save_output(save_json, record, outs[method, (nfe, repeat)])
        log.info("%s/%s NFE %d repeat %d: %s %.4f", args.task, method, nfe, repeat, cfg["metric"], record["value"])
    save_output(save_json, reference_record(cfg, split, fid), ref_out)


def cmd_task_figure(args) -> None:
    from ddm.report.figures import task_figure

    cfg = _task_cfg(read_params(args), args.task)
    split = _split(args.data, cfg, "test")
    samples = [load_images(p) for p in args.samples]
    _check_out(args.out)
    with _writing(args.out):
        task_figure(split, samples, args.labels, Path(args.out), n=args.rows)


def add_task_steps(sub) -> None:
    """The subcommands of the conditioned tasks (Tables 2 and 3)."""
    positive = int_at_least(1)
    device = {"type": parse_device, "help": "cpu, cuda or cuda:N (default: cuda if there is one, else cpu)"}
    sets = {"type": parse_nfe_repeat, "nargs": "+", "required": True,
            "help": "sample sets NFE:REPEAT, e.g. 5:0 5:1 10:0"}
    s = add_command(sub, "prepare-task", cmd_prepare_task, "a conditioned task's train and test splits (Tables 2, 3)",
                    "task", "train", "test")
    s.add_argument("--data-root", default="data", help="data folder of a task that reads a data set (`dataset:`)")
    autoencoder = {"help": "a latent task's autoencoder (`ddm train-autoencoder`); required for one"}
    s = add_command(sub, "train-autoencoder", cmd_train_autoencoder, "a latent task's KL autoencoder and its "
                    "test-split reconstruction PSNR (§5.1)", "task", "data", "test", "out", "metrics")
    s.add_argument("--checkpoints", required=True, help="folder of per-task checkpoint folders")
    s.add_argument("--device", **device)
    s = add_command(sub, "train-task", cmd_train_task, "train one (task, method) conditioned network; resumes",
                    "task", "method", "data", "out")
    s.add_argument("--checkpoints", required=True, help="folder of per-config checkpoint folders")
    s.add_argument("--curve", help="also write the training curve (CSV) here")
    s.add_argument("--autoencoder", **autoencoder)
    s.add_argument("--device", **device)
    s = add_command(sub, "sample-task", cmd_sample_task, "one sample per test condition for each sample set",
                    "task", "method", "model", "data", "out-dir")
    s.add_argument("--autoencoder", **autoencoder)
    s.add_argument("--sets", **sets)
    s.add_argument("--batch-size", type=positive, default=None,
                   help="images denoised at once (default: the conditioned preset's batch_size, else 256)")
    s.add_argument("--resume-dir", default=None,
                   help="keep each finished set here; a rerun reads them back and samples the rest (ddm.setstore)")
    s.add_argument("--device", **device)
    s = add_command(sub, "evaluate-task", cmd_evaluate_task, "Table 2's metric of every sample set of a task, and the "
                    "trivial references", "task", "data", "samples-dir", "out-dir")
    s.add_argument("--methods", nargs="+", required=True)
    s.add_argument("--sets", **sets)
    s.add_argument("--reference", help="FID reference statistics (inpainting)")
    s.add_argument("--extractor", help="FID extractor file (inpainting)")
    s = add_command(sub, "task-figure", cmd_task_figure, "condition | samples | target, one row per test example",
                    "task", "data", "out")
    s.add_argument("--samples", nargs="+", required=True)
    s.add_argument("--labels", nargs="+", required=True)
    s.add_argument("--rows", type=positive, default=8)

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
    ddm compare    RUN_A RUN_B                                      two runs' cells and verdicts (exit 1: moved)
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
import sys
import traceback
import warnings
from pathlib import Path

from ddm.cli_base import (Parser, add_command, cpu_seconds, dataset_block, default_device, error_message, exit_code,
                          int_at_least, model_for, parse_device, parse_nfe, read_params, run_fit, save_output,
                          set_threads, show_warning)
from ddm.cli_report import add_report_steps
from ddm.cli_tasks import add_task_steps
from ddm.contracts import check_reference, load_images, load_json_product, load_sample_set
# InputError: exit code 2 (ddm.cli_base's exit-code table)
from ddm.io import (InputError, check_output as _check_out, file_checksum, save_json, save_torch, utc_timestamp,
                    writing as _writing)
from ddm.modelfile import SEED_BLOCK, read_model, sample_seeds  # torch inside
from ddm.plugins import load_from as load_plugins  # standard library and PyYAML only
from ddm.shards import SAMPLE_BATCH, shard_meta  # standard library only

log = logging.getLogger("ddm")


# -- steps ----------------------------------------------------------------------------------------
def cmd_prepare(args) -> None:
    params = read_params(args)
    block = dataset_block(params, args.dataset)
    _check_out(args.out)
    from ddm.datasets import prepare_dataset

    images = prepare_dataset(args.dataset, block, args.data_root, f"presets/{params['preset']}/{args.dataset}")
    save_output(save_torch, images.contiguous(), args.out)
    log.info("prepared %s: %s images of shape %s -> %s", args.dataset, images.shape[0], tuple(images.shape[1:]), args.out)


def cmd_extractor(args) -> None:
    params = read_params(args)
    fid_cfg = dataset_block(params, args.dataset)["fid"]
    name = fid_cfg["extractor"]
    out = _check_out(args.out)
    from ddm.extractors import WEIGHTS, resolve_weights  # torch-fidelity: imported once the checks passed

    source = WEIGHTS[name]
    if source.make:  # the extractor's weights are made here (the digits classifier: trained)
        weights = _check_out(out.with_name(source.file_name), "the extractor's weights file")
        with _writing(weights):
            info = {"extractor": name, "weights": str(weights), **source.make(weights, params["seed"])}
    else:
        info = {"extractor": name, "weights": str(resolve_weights(name, fid_cfg.get("weights")))}
    info["weights_sha256"] = file_checksum(info["weights"], memo=True)
    save_output(save_json, info, out)
    log.info("FID extractor %s: %s", name, info)


def cmd_refstats(args) -> None:
    ex = load_json_product(args.extractor, "extractor")
    images = load_images(args.data, "dataset file", "ddm prepare", min_count=2, mmap=True)  # streamed if large
    _check_out(args.out)
    from ddm.fidstats import reference_stats  # torch-fidelity: once the checks passed

    with _writing(args.out):
        reference_stats(images, ex["extractor"], ex["weights"], args.out)
    log.info("reference statistics of %d images -> %s", images.shape[0], args.out)


def cmd_train(args) -> None:
    from ddm.config import resolve, resolved_hash

    params = read_params(args)
    cfg = resolve(params, args.dataset, args.method)
    from ddm.datasets import ModelRangeImages  # torch: once params.yaml passed (a config error stays fast)
    from ddm.experiment import build
    from ddm.fit import train_config

    tcfg = train_config(cfg, f"presets/{params['preset']}/{args.dataset}/train")
    exp = build(cfg)
    images = load_images(args.data, "dataset file", "ddm prepare", channels=cfg["channels"],
                         resolution=cfg["resolution"], mmap=True)  # read per batch: no float32 copy of the set
    if run_fit(args, exp, tcfg, ModelRangeImages(images), resolved_hash(cfg)):
        log.info("trained %s on %s -> %s (EMA weights)", args.method, args.dataset, args.out)


def cmd_sample(args) -> None:
    from ddm.config import resolve, resolved_hash

    cfg = resolve(read_params(args), args.dataset, args.method)
    from ddm.experiment import load_model  # torch: once params.yaml passed
    from ddm.sampleset import SampleSetError, sample_set, set_bounds

    request = {"shard": args.shard, "shard_size": args.shard_size, "batch_size": args.batch_size}
    try:  # the library's rules, checked before the model loads; its argument names as this command's options
        bounds = set_bounds(cfg, args.num_samples, **request, training_images=args.data)
    except SampleSetError as e:
        raise InputError(f"{_SAMPLE_OPTIONS.get(e.option, '--' + e.option.replace('_', '-'))} {e.message}") from None
    exp, net = model_for(args, cfg, load_model, resolved_hash, f"{args.dataset}/{args.method}")
    _check_out(args.out)
    images = None
    if cfg["sampling"]["denoiser"] == "posterior_mean":  # the sampler ceiling: its training images
        images = load_images(args.data, "dataset file", "ddm prepare", channels=cfg["channels"],
                             resolution=cfg["resolution"])
    x = sample_set(exp, net, args.nfe, args.repeat, args.num_samples, **request, device=default_device(args),
                   training_images=images)
    meta = shard_meta(args.dataset, args.method, args.nfe, args.repeat, args.num_samples,  # where it belongs
                      file_checksum(args.model, memo=True), bounds, args.shard_size)
    save_output(lambda obj, path: save_torch(obj, path, meta=meta), x, args.out)
    log.info("%d samples at NFE %d -> %s", len(x), args.nfe, args.out)


#: ``ddm.sampleset``'s argument -> the ``ddm sample`` option that gives it (the rest: ``--`` + the name).
_SAMPLE_OPTIONS = {"training_images": "--data"}


def cmd_evaluate(args) -> None:
    from ddm.config import DATASET_CHANNELS
    from ddm.replicates import check_method

    params = read_params(args)
    block = dataset_block(params, args.dataset)
    check_method(params, args.method)  # a method of params, or a training-seed replicate of one
    ex = load_json_product(args.extractor, "extractor")
    # one file: the one-pass FID of its images; shards: one in memory at a time
    samples = load_sample_set(args.samples, channels=DATASET_CHANNELS.get(args.dataset), resolution=block["resolution"],
                              expect=vars(args))  # each file of this set once, in order (ddm.shards.SetCheck)
    from ddm.kid import reference_features

    ref_rows = reference_features(check_reference(args.reference), args.reference)  # KID's reference rows
    _check_out(args.out)
    from ddm.fidstats import score_set  # torch-fidelity: once the checks passed

    result = score_set(samples, args.reference, ex["extractor"], ex["weights"], ref_rows)
    result.update({k: getattr(args, k) for k in ("dataset", "method", "nfe", "repeat")})
    result["computed_at"] = utc_timestamp()  # provenance: when this FID was computed (reports' date)
    save_output(save_json, result, args.out)
    log.info("FID %.3f (%d samples, %s) -> %s", result["fid"], result["num_samples"], result["extractor"], args.out)


def cmd_convergence(args) -> None:
    from ddm.config import resolve
    from ddm.experiment import load_model
    from ddm.generate import convergence_rows

    cfg = resolve(read_params(args), args.dataset, args.method)
    blob = read_model(args.model)
    exp, net = load_model(args.model, default_device(args), blob=blob)
    exp.cfg["sampling"] = cfg["sampling"]  # sampling options come from params.yaml, not the model file
    ex = load_json_product(args.extractor, "extractor")
    check_reference(args.reference)
    _check_out(args.out)
    rows = convergence_rows(exp, net, blob.get("snapshots"), args.nfe, args.num_samples, args.reference, ex["extractor"],
                            ex["weights"], device=default_device(args))
    save_output(save_json, {"dataset": args.dataset, "method": args.method, "num_samples": args.num_samples,
                      "extractor": ex["extractor"], "rows": rows}, args.out)


def cmd_fig3(args) -> None:
    from ddm.experiment import load_model
    from ddm.generate import x0_mse_curve

    models = [(Path(path).stem, *load_model(path, default_device(args))) for path in args.models]
    _check_out(args.out)
    curves = {name: x0_mse_curve(exp, net, args.nfe, sample_seeds(0, args.num_samples)) for name, exp, net in models}
    save_output(save_json, {"nfe": args.nfe, "num_samples": args.num_samples, "curves": curves}, args.out)


# -- parser ---------------------------------------------------------------------------------------
def _add_steps(sub) -> None:
    """The subcommands of the data, training and sampling steps."""
    positive, count, samples = int_at_least(1), int_at_least(0), int_at_least(1, SEED_BLOCK)
    device = {"type": parse_device, "help": "cpu, cuda or cuda:N (default: cuda if there is one, else cpu)"}

    s = add_command(sub, "prepare", cmd_prepare, "dataset -> uint8 tensor file (downloads if needed)", "dataset", "out")
    s.add_argument("--data-root", default="data")
    add_command(sub, "extractor", cmd_extractor, "FID feature extractor (trains the digits classifier)", "dataset",
                "out")
    add_command(sub, "refstats", cmd_refstats, "FID reference statistics of a dataset file", "data", "extractor", "out")
    s = add_command(sub, "train", cmd_train, "train one (dataset, method); resumes from its checkpoints",
                    "dataset", "method", "data", "out")
    s.add_argument("--checkpoints", required=True, help="folder of per-config checkpoint folders")
    s.add_argument("--curve", help="also write the training curve (CSV) here")
    s.add_argument("--device", **device)
    s = add_command(sub, "sample", cmd_sample, "draw samples from a trained model", "dataset", "model", "out")
    s.add_argument("--method", required=True, help="a method of params.yaml (may be a solver variant)")
    s.add_argument("--nfe", type=parse_nfe, required=True)
    s.add_argument("--repeat", type=count, default=0)
    s.add_argument("--num-samples", type=samples, required=True)
    s.add_argument("--batch-size", type=positive, default=SAMPLE_BATCH)
    s.add_argument("--shard", type=count, help="draw only shard K of the set: samples [K*S, (K+1)*S) (ddm.shards)")
    s.add_argument("--shard-size", type=positive, help="S, the samples per shard (with --shard)")
    s.add_argument("--data", help="training images (for `denoiser: posterior_mean`, the sampler ceiling)")
    s.add_argument("--device", **device)
    s = add_command(sub, "convergence", cmd_convergence, "FID against training step from a model's snapshots",
                    "dataset", "method", "model", "reference", "extractor", "out")
    s.add_argument("--nfe", type=parse_nfe, nargs="+", required=True)
    s.add_argument("--num-samples", type=samples, required=True)
    s.add_argument("--device", **device)
    s = add_command(sub, "evaluate", cmd_evaluate, "FID of a sample set (one file, or its shards in order)",
                    "reference", "extractor", "dataset", "method", "out")
    s.add_argument("--samples", nargs="+", required=True, help="the set's file, or its shard files (streamed)")
    s.add_argument("--nfe", type=positive, required=True)
    s.add_argument("--repeat", type=count, required=True)
    s = add_command(sub, "fig3", cmd_fig3, "Fig. 3: MSE of the predicted x0 against t", "out")
    s.add_argument("--models", nargs="+", required=True)
    s.add_argument("--nfe", type=parse_nfe, default=100)
    s.add_argument("--num-samples", type=samples, default=64)
    s.add_argument("--device", **device)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ddm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)
    _add_steps(sub)
    add_task_steps(sub)
    add_report_steps(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    warnings.showwarning = show_warning
    try:
        set_threads()
        load_plugins(args.params)  # params.yaml's plug-ins (ddm.plugins), also for a subcommand that reads no params
        code = args.fn(args) or 0  # a command that judges (compare) returns its verdict as the exit code
        log.info("ddm %s done: %.1f s CPU", args.command, cpu_seconds())
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise  # a bug: Python's traceback
        if args.verbose:
            traceback.print_exc()
        for line in error_message(e, getattr(args, "params", None)):
            print(f"ddm {args.command}: {line}", file=sys.stderr)
        return code
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

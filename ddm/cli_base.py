"""What every ``ddm`` subcommand shares (ddm/cli.py, ddm/cli_tasks.py): the exit codes and the
one-line messages of expected errors, argparse's option types and parser, and the checks and
steps the handlers have in common. ddm.codedeps reads it part by part, as it reads ddm/cli.py: a
subcommand's code is only the parts it runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# InputError: an option value or input file the command cannot use (exit code 2); OutputError: an
# output that cannot be written (exit code 1). Standard library only at import (torch inside)
from ddm.io import InputError, OutputError, check_output as _check_out, writing as _writing

log = logging.getLogger("ddm")

#: Exit code of a runtime failure (missing download or weights, unwritable output, ...).
EXIT_FAILURE = 1
#: Exit code of a usage / configuration / input error.
EXIT_USAGE = 2
#: Exit code of a preempted training run (``ddm.training.PREEMPT_EXIT_CODE``, EX_TEMPFAIL).
EXIT_PREEMPTED = 75


# -- argparse option types ------------------------------------------------------------------------
def int_at_least(low: int, high: int | None = None):
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


def parse_nfe(text: str) -> int:
    """argparse type: an NFE >= 1 whose time grid fits in this machine's memory (``ddm.limits``)."""
    from ddm.limits import nfe_error
    from ddm.yamlio import ConfigError

    value = int_at_least(1)(text)
    try:
        msg = nfe_error(value)
    except ConfigError as e:  # DDM_MEMORY that is not a size
        raise argparse.ArgumentTypeError(str(e)) from None
    if msg:
        raise argparse.ArgumentTypeError(msg)
    return value


def parse_device(name: str) -> str:
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


# -- checks and steps the handlers share ----------------------------------------------------------
def read_params(args):
    """params.yaml (``--params``), loaded and validated (``ddm.validation.load_params``)."""
    from ddm.validation import load_params

    return load_params(args.params)


def dataset_block(params, dataset: str) -> dict:
    """The preset's block of ``dataset``; a ConfigError naming the datasets the preset has."""
    from ddm.config import ConfigError, dataset_names

    if dataset not in params["presets"][params["preset"]]:
        raise ConfigError(f"dataset '{dataset}' is not in preset '{params['preset']}' "
                          f"(allowed: {', '.join(dataset_names(params))})")
    return params["presets"][params["preset"]][dataset]


def save_output(save, obj, path) -> None:
    """``save(obj, path)`` (a writer of ``ddm.io``: atomic, with its checksum), an OS error as
    one line naming ``path``."""
    with _writing(path):
        save(obj, path)


def default_device(args) -> str:
    """``--device``, else cuda when a GPU is there, else cpu."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")



def run_fit(args, exp, tcfg, data, config_hash: str) -> bool:
    """``ddm.fit.fit`` in the checkpoint folder of this config under --checkpoints, once the
    outputs are checked; False on the processes of a distributed run other than rank 0."""
    from ddm.fit import checkpoint_dir, fit

    for path, what in ((args.out, "--out"), (args.curve, "--curve")):
        if path:
            _check_out(path, what)
    ckpt_dir = checkpoint_dir(args.checkpoints, args.method, config_hash)
    _check_out(ckpt_dir / "probe", "--checkpoints")
    return fit(exp, data, tcfg, ckpt_dir, args.out, config_hash=config_hash, curve=args.curve,
               device=default_device(args))


def model_for(args, cfg: dict, load, config_hash, what: str):
    """(experiment, network) of --model on the device, checked to be trained with ``cfg`` (the
    resolved config of ``what`` in params.yaml), with ``cfg``'s sampling options."""
    exp, net = load(args.model, default_device(args))
    if config_hash(cfg) != config_hash(exp.cfg):
        raise InputError(f"model file {args.model} was trained with another config than params.yaml gives for "
                         f"{what}: retrain it (snakemake does so by itself)")
    exp.cfg["sampling"] = cfg["sampling"]  # sampling options come from params.yaml, not the model file
    return exp, net



# -- parser, exit codes, messages -----------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other failure: ``ddm <subcommand>: <message>``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def add_command(sub, name: str, fn, help_: str, *required: str) -> argparse.ArgumentParser:
    """Register the subcommand ``name`` run by ``fn`` with ``--params`` and the ``required`` options
    (``ddm.codedeps`` reads these calls to find each subcommand's code)."""
    s = sub.add_parser(name, help=help_)
    s.set_defaults(fn=fn)
    s.add_argument("--params", default=os.environ.get("DDM_PARAMS") or "params.yaml",
                   help="experiment config (default: $DDM_PARAMS, else params.yaml; the Snakefile sets "
                        "DDM_PARAMS to the merged config when --config/--configfile override params.yaml)")
    for opt in required:
        s.add_argument(f"--{opt}", required=True)
    return s



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


def exit_code(e: BaseException) -> int | None:
    """The documented exit code of an expected error; None for a bug."""
    if isinstance(e, InputError):
        return EXIT_USAGE
    for (module, name), code in _EXPECTED.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return code
    return EXIT_FAILURE if isinstance(e, (OutputError, OSError)) else None


def error_message(e: BaseException, params: str | None = None) -> list[str]:
    """The lines of an expected error (one, or one per params.yaml error reported at once); a
    config error names the params file the command read (``params``: --params or $DDM_PARAMS)."""
    if isinstance(e, OSError) and e.errno is not None and e.strerror:
        return [f"{e.strerror}" + (f": {e.filename}" if e.filename else "")]
    text = str(e).strip()
    if params and type(e).__name__ == "ConfigError":
        from ddm.yamlio import name_source

        text = name_source(text, params)
    return text.splitlines() or [type(e).__name__]


def set_threads() -> None:
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


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (e.g. ddm.datasets' skipped or linked image files) as one log line, as
    the command's own warnings are; ``-v`` adds where it was raised."""
    where = f" ({filename}:{lineno})" if log.isEnabledFor(logging.DEBUG) else ""
    logging.getLogger("ddm").warning("%s%s", message, where)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system): what a job cost, which
    a loaded machine inflates far less than the wall time (ddm.plan's estimates are checked on it)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

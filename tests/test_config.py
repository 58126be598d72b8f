"""ddm.validation (load_params, validate) and ddm.config (resolve, resolved_hash) on the shipped and the tiny config."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from conftest import REPO, TINY_PARAMS, merge_params
import ddm.families
from ddm.config import METHOD_DEFAULTS, REPORT_KEYS, SAMPLING_KEYS, ConfigError, all_methods, dataset_names, resolve, resolved_hash
from ddm.resources import SCHEMA_PATH
from ddm.validation import load_params, schema, validate

FAMILIES = list(ddm.families.FAMILIES)  # the h_t families the package defines (the schema's family enum)


def method_props() -> dict:
    """The schema's ``method`` properties, their lists of names filled (``ddm.validation.schema``)."""
    return schema()["definitions"]["method"]["properties"]


def trained_methods(params) -> list[str]:
    """Methods with a network of their own (sampling-only variants, if any, excluded)."""
    return [*params["methods"], *params["ablation_methods"]]


@pytest.fixture
def shipped():
    return load_params(REPO / "params.yaml")


@pytest.fixture
def tiny():
    return load_params(TINY_PARAMS)


def _error(params) -> str:
    with pytest.raises(ConfigError) as e:
        validate(params)
    return str(e.value)


def _assert_allowed(msg: str, values) -> None:
    m = re.search(r"allowed: ([^)]*)\)", msg)
    assert m, f"no '(allowed: ...)' in: {msg}"
    assert [v.strip() for v in m.group(1).split(",")] == (list(values) or ["none"]), msg


# --------------------------------------------------------------------------- load / validate
def test_shipped_params_validate(shipped):
    validate(shipped)  # load_params validated it already; again on the dict
    assert shipped["preset"] in shipped["presets"]
    assert dataset_names(shipped) == ["digits"]
    assert set(shipped["methods"]) == {"ddm", "ddpm", "sde"}
    for ds in shipped["presets"]["paper"]:  # the other preset validates as well
        assert ds in ("cifar10", "celebahq256")
    validate({**shipped, "preset": "paper"})


def test_tiny_params_validate(tiny):
    assert dataset_names(tiny) == ["digits"]
    assert tiny["presets"]["embedded"]["digits"]["train"]["steps"] < 50


def test_load_params_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="no params file at"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping; got list"):
        load_params(tmp_path / "list.yaml")


def test_schema_is_the_one_the_pipeline_uses():
    """The schema ships in the package (ddm/data), and the Snakefile validates through ddm.validation
    only: Snakemake's own validate() against the file on disk would refuse a name registered
    outside the package (tests/test_extension.py)."""
    assert SCHEMA_PATH == REPO / "ddm" / "data" / "params.schema.yaml"
    assert SCHEMA_PATH.is_file()
    snakefile = (REPO / "Snakefile").read_text()
    assert "validate_params(config, " in snakefile
    assert "SCHEMA_PATH" not in snakefile and not re.search(r"^\s*validate\(config", snakefile, flags=re.M)


def _sources() -> dict[str, list[str]]:
    """Each list of names of the schema, read from the code that defines it (not through
    ddm.registry.schema_enums or ddm.validation.schema_names)."""
    from ddm import conditioning, families, losses, names, nets, roles, training
    from ddm.config import TASKS
    from ddm.datasets import DATASETS
    from ddm.registry import GRIDS, SAMPLER_FINAL_STEPS, SAMPLERS
    from ddm.task_metrics import TASK_METRICS

    return {"family": list(families.FAMILIES), "ht": ["main", *families.FAMILIES], "process": list(names.PROCESSES),
            "weighting": list(losses.WEIGHTINGS), "sampler": list(SAMPLERS), "grid": list(GRIDS),
            "final_step": list(dict.fromkeys(s for name in SAMPLERS for s in SAMPLER_FINAL_STEPS[name])),
            "head": list(nets.HEAD_TYPES), "loss_type": list(losses.LOSS_TYPES), "reduction": list(losses.REDUCTIONS),
            "role": list(roles.ROLES), "dataset": [k for k, spec in DATASETS.items() if spec.channels is not None],
            "extractor": list(names.EXTRACTORS), "precision": list(training.PRECISIONS),
            "encoder": list(conditioning.ENCODERS), "conditioning": list(conditioning.CONDITIONINGS),
            "task_dataset": list(dict.fromkeys(d for t in TASKS.values() for d in t["datasets"])),
            "task_metric": list(TASK_METRICS)}


def _at(tree: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        tree = tree[key]
    return tree


#: Each list of names -> where a value of it goes in the tiny config (dotted), and the path the error names.
ENUM_VALUES = {
    "family": ("ht", "ht"),
    **{k: (f"methods.ddm.{k}", f"methods/ddm/{k}") for k in ("ht", "process", "weighting", "sampler", "grid",
                                                               "final_step", "head", "loss_type", "reduction")},
    "role": ("ablation_methods.arch_conv.role", "ablation_methods/arch_conv/role"),
    "dataset": ("presets.embedded.nosuch", "presets/embedded"),
    "extractor": ("presets.embedded.digits.fid.extractor", "presets/embedded/digits/fid/extractor"),
    "precision": ("presets.embedded.digits.train.precision", "presets/embedded/digits/train/precision"),
    "encoder": ("conditioned_presets.embedded.model.encoder", "conditioned_presets/embedded/model/encoder"),
    "conditioning": ("conditioned_presets.embedded.model.conditioning", "conditioned_presets/embedded/model/conditioning"),
    "task_dataset": ("conditioned_presets.embedded.tasks.saliency.dataset",
                     "conditioned_presets/embedded/tasks/saliency/dataset"),
    "task_metric": ("conditioned_presets.embedded.tasks.saliency.metrics",
                    "conditioned_presets/embedded/tasks/saliency/metrics/0"),
}


def test_the_schema_file_keeps_no_list_that_code_defines():
    """ddm/data/params.schema.yaml holds no enum of SCHEMA_ENUMS (nor the task names): schema() fills
    each from the code that defines the names; the lists left in the file are defined nowhere else."""
    from ddm.validation import SCHEMA_ENUMS, TASKS_NODE

    on_disk = yaml.safe_load(SCHEMA_PATH.read_text())
    for name, path in SCHEMA_ENUMS.items():
        assert "enum" not in _at(on_disk, path), f"{'/'.join(path)}: a copy of the {name} names in the file"
    assert _at(on_disk, TASKS_NODE)["properties"] == {}
    assert set(SCHEMA_ENUMS) == set(_sources()) == set(ENUM_VALUES)


@pytest.mark.parametrize("name", sorted(ENUM_VALUES))
def test_each_schema_enum_is_its_source_and_refuses_another_name(tiny, name):
    """schema() has each list of names equal to the code that defines it, in its order, and a name
    outside it is refused naming the value's path and every allowed name."""
    from ddm.validation import SCHEMA_ENUMS

    allowed = _sources()[name]
    assert _at(schema(), SCHEMA_ENUMS[name])["enum"] == allowed
    key, where = ENUM_VALUES[name]
    value = copy.deepcopy(tiny["presets"]["embedded"]["digits"]) if name == "dataset" else "nosuch"
    value = ["nosuch"] if name == "task_metric" else value  # a list of names
    msg = _error(merge_params(tiny, {key: value}))
    assert msg.startswith(f"params.yaml: {where}: ") and "'nosuch'" in msg, msg
    _assert_allowed(msg, allowed)


def test_the_task_names_are_those_of_the_tasks(tiny):
    from ddm.config import TASKS
    from ddm.validation import TASKS_NODE

    assert list(_at(schema(), TASKS_NODE)["properties"]) == list(TASKS)
    msg = _error(merge_params(tiny, {"conditioned_presets.embedded.tasks.colorization": {"size": 8}}))
    assert msg.startswith("params.yaml: conditioned_presets/embedded/tasks: ") and "'colorization'" in msg, msg
    _assert_allowed(msg, sorted(TASKS))


def test_schema_dialect_matches_snakemake_validator():
    from jsonschema import Draft202012Validator

    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    assert schema["$schema"] == Draft202012Validator.META_SCHEMA["$schema"]


def test_enum_error_names_path_and_allowed_values(tiny):
    msg = _error({**tiny, "ht": "cubic"})
    assert msg.startswith("params.yaml: ht: ")
    assert "'cubic'" in msg
    _assert_allowed(msg, FAMILIES)

    bad = copy.deepcopy(tiny)
    bad["methods"]["ddm"]["ht"] = "cubic"
    msg = _error(bad)
    assert "methods/ddm/ht" in msg
    _assert_allowed(msg, method_props()["ht"]["enum"])
    assert method_props()["ht"]["enum"] == ["main", *FAMILIES]

    bad = copy.deepcopy(tiny)
    bad["methods"]["ddpm"]["sampler"] = "heun"
    msg = _error(bad)
    assert "methods/ddpm/sampler" in msg
    _assert_allowed(msg, method_props()["sampler"]["enum"])
    assert "heun" not in method_props()["sampler"]["enum"]


def test_type_and_unknown_key_errors_name_the_path(tiny):
    msg = _error({**tiny, "seed": "zero"})
    assert "params.yaml: seed:" in msg and "not of type 'integer'" in msg

    msg = _error({**tiny, "bogus": 1})
    assert "(top level)" in msg and "'bogus' was unexpected" in msg

    bad = copy.deepcopy(tiny)
    bad["methods"]["ddm"]["hT"] = "linear"
    msg = _error(bad)
    assert "methods/ddm" in msg and "'hT' was unexpected" in msg

    bad = merge_params(tiny, {"presets.embedded.digits.train.steps": 1.5})
    msg = _error(bad)
    assert "presets/embedded/digits/train/steps" in msg and "integer" in msg

    bad = merge_params(tiny, {"presets.embedded.mnist": tiny["presets"]["embedded"]["digits"]})
    msg = _error(bad)
    assert "presets/embedded" in msg and "'mnist'" in msg
    _assert_allowed(msg, _sources()["dataset"])


def test_every_error_is_reported_at_once(tiny):
    msg = _error({**tiny, "ht": "cubic", "seed": -1})
    assert len(msg.splitlines()) == 2
    assert "params.yaml: ht:" in msg and "params.yaml: seed:" in msg


def test_batch_that_does_not_split_into_its_passes(shipped):
    """batch_size over accum x gpus x nodes is checked at validation, for a dataset's training, a
    task's and a task's autoencoder, before any job starts; the paper preset's sampling batch is
    the preset's batch_size (256 where it names none)."""
    from ddm.config import task_sampling_batch

    cases = {"presets.embedded.digits.train.accum": "params.yaml: presets/embedded/digits/train/batch_size: 64 does not split",
             "conditioned_presets.embedded.train.accum": "conditioned_presets/embedded/tasks/saliency/train/batch_size: 32",
             "conditioned_presets.embedded.tasks.super_resolution.latent.accum":
                 "conditioned_presets/embedded/tasks/super_resolution/latent/batch_size: 32"}
    for key, want in cases.items():
        msg = _error(merge_params(shipped, {key: 3}))
        assert want in msg and "accum x gpus x nodes = 3" in msg and "\n" not in msg, msg
    validate(merge_params(shipped, {"presets.embedded.digits.train.accum": 4}))
    assert task_sampling_batch(shipped) == 256
    assert task_sampling_batch({**shipped, "preset": "paper"}) == shipped["conditioned_presets"]["paper"]["batch_size"]


def test_unknown_preset(tiny):
    msg = _error({**tiny, "preset": "huge"})
    assert "preset" in msg and "'huge'" in msg
    _assert_allowed(msg, ["embedded"])


def test_method_overrides_naming_an_unknown_method(tiny):
    bad = merge_params(tiny, {"presets.embedded.digits.method_overrides.sdee": {"sigma_max": 3.0}})
    msg = _error(bad)
    assert "presets/embedded/digits/method_overrides" in msg and "'sdee'" in msg
    _assert_allowed(msg, sorted({**tiny["methods"], **tiny["ablation_methods"]}))  # solver variants train nothing


@pytest.mark.parametrize("override", [{"sigma_maxx": 12.0}, {"sigma_max": "big"}], ids=["typo-key", "wrong-type"])
def test_method_overrides_values_are_validated(tiny, override):
    bad = merge_params(tiny, {"presets.embedded.digits.method_overrides.sde": override})
    msg = _error(bad)
    assert "presets/embedded/digits/method_overrides/sde" in msg


def test_duplicate_method_names_across_methods_and_ablations(tiny):
    bad = copy.deepcopy(tiny)
    bad["ablation_methods"]["ddm"] = dict(bad["methods"]["ddm"])
    bad["ablation_methods"]["sde"] = dict(bad["methods"]["sde"])
    msg = _error(bad)
    assert "methods" in msg and "ablation_methods" in msg
    assert "['ddm', 'sde']" in msg


def test_bad_method_name_pattern(tiny):
    bad = copy.deepcopy(tiny)
    bad["methods"]["DDM-2"] = dict(bad["methods"]["ddm"])
    msg = _error(bad)
    assert "methods" in msg and "DDM-2" in msg


# --------------------------------------------------------------------------- resolve
def test_resolve_fills_the_defaults_of_each_process(tiny):
    for method, process in [("ddm", "ddm"), ("ddpm", "vp"), ("sde", "ve"), ("ddpm_x0", "vp"), ("w_unit", "ddm")]:
        cfg = resolve(tiny, "digits", method)
        merged = {**cfg["method"], **cfg["sampling"]}
        entry = all_methods(tiny)[method]
        overrides = tiny["presets"]["embedded"]["digits"]["method_overrides"].get(method, {})
        for k, default in METHOD_DEFAULTS[process].items():
            expected = overrides.get(k, entry.get(k, default))
            if k == "ht" and expected == "main":
                expected = tiny["ht"]
            assert merged[k] == expected, (method, k)
        # role and label are the report's (ddm.roles): neither training nor sampling sees them
        assert set(merged) == (set(METHOD_DEFAULTS[process]) | set(entry) | set(overrides)) - REPORT_KEYS, method
        assert cfg["dataset"] == "digits" and cfg["channels"] == 1 and cfg["resolution"] == 8
        assert cfg["model"] == tiny["presets"]["embedded"]["digits"]["model"]
        assert cfg["train"] == {**tiny["presets"]["embedded"]["digits"]["train"], "seed": tiny["seed"]}

    assert resolve(tiny, "digits", "ddpm")["method"]["beta_max"] == 20.0
    assert resolve(tiny, "digits", "ddpm")["method"]["x0_branch"] is False
    assert resolve(tiny, "digits", "ddpm_x0")["method"]["x0_branch"] is True
    assert resolve(tiny, "digits", "ddpm")["method"]["head"] == "conv"
    assert resolve(tiny, "digits", "sde")["method"]["sigma_max"] == 16.0  # the preset's override
    assert resolve(tiny, "digits", "sde")["method"]["sigma_min"] == 0.01
    assert resolve(tiny, "digits", "sde")["sampling"]["t_end"] == 1e-5
    assert resolve(tiny, "digits", "ddm")["method"]["weighting"] == "inverse"
    assert resolve(tiny, "digits", "ddm")["sampling"] == {"sampler": "ddm", "grid": "uniform", "t_end": 1e-3,
                                                         "rho": 2.0, "clip": None, "final_step": "paper",
                                                         "denoiser": "network"}


def test_resolve_does_not_mutate_params(tiny):
    before = copy.deepcopy(tiny)
    cfg = resolve(tiny, "digits", "sde")
    cfg["model"]["ch"] = 999
    cfg["train"]["steps"] = 999
    assert tiny == before


def test_ht_main_follows_the_top_level_ht(tiny):
    for family in FAMILIES:
        params = {**tiny, "ht": family}
        validate(params)
        for m in ("ddm", "w_unit", "w_exp", "arch_conv", "loss_l1"):  # ht: main (or defaulted to main)
            assert resolve(params, "digits", m)["method"]["ht"] == family, (family, m)
        for fixed in FAMILIES:  # the Table 4 rows keep their own h_t
            assert resolve(params, "digits", f"ht_{fixed}")["method"]["ht"] == fixed
    # a DDM method without `ht` gets the default "main", which follows the top-level ht too
    params = copy.deepcopy(tiny)
    del params["methods"]["ddm"]["ht"]
    params["ht"] = "sin"
    assert resolve(params, "digits", "ddm")["method"]["ht"] == "sin"
    # non-DDM processes have no ht
    assert "ht" not in resolve(tiny, "digits", "ddpm")["method"]


def test_resolve_unknown_dataset_or_method(tiny):
    with pytest.raises(ConfigError, match=r"dataset 'cifar10' is not in preset 'embedded' \(allowed: digits\)"):
        resolve(tiny, "cifar10", "ddm")
    with pytest.raises(ConfigError) as e:
        resolve(tiny, "digits", "dpm")
    assert "unknown method 'dpm'" in str(e.value)
    _assert_allowed(str(e.value), sorted(all_methods(tiny)))


# --------------------------------------------------------------------------- sampling keys / hash
def test_sampling_keys():
    assert SAMPLING_KEYS == frozenset({"sampler", "grid", "t_end", "rho", "clip", "final_step", "denoiser"})


@pytest.mark.parametrize("key,value", [("sampler", "ddm_deterministic"), ("grid", "polynomial"), ("rho", 3.0),
                                       ("t_end", 1e-2), ("clip", 1.0)])
def test_sampling_keys_do_not_enter_training(tiny, key, value):
    base = resolve(tiny, "digits", "ddm")
    params = copy.deepcopy(tiny)
    params["methods"]["ddm"][key] = value
    validate(params)
    cfg = resolve(params, "digits", "ddm")
    assert cfg["method"] == base["method"]
    assert not SAMPLING_KEYS & set(cfg["method"])
    assert resolved_hash(cfg) == resolved_hash(base)
    assert cfg["sampling"][key] == value and cfg["sampling"] != base["sampling"]


@pytest.mark.parametrize("change", [
    {"ht": "linear"},
    {"seed": 1},
    {"presets.embedded.digits.train.steps": 7},
    {"presets.embedded.digits.model.ch": 16},
    {"methods.ddm.weighting": "unit"},
])
def test_training_keys_change_the_hash(tiny, change):
    changed = merge_params(tiny, change)
    validate(changed)
    assert resolved_hash(resolve(changed, "digits", "ddm")) != resolved_hash(resolve(tiny, "digits", "ddm"))


def test_hash_is_per_method_and_stable(tiny):
    hashes = {m: resolved_hash(resolve(tiny, "digits", m)) for m in trained_methods(tiny)}
    assert all(re.fullmatch(r"[0-9a-f]{12}", h) for h in hashes.values())
    assert hashes == {m: resolved_hash(resolve(copy.deepcopy(tiny), "digits", m)) for m in trained_methods(tiny)}
    # ht_constant and ddm (ht: main -> constant) are the same training config
    assert hashes["ht_constant"] == hashes["ddm"]
    assert len(set(hashes.values())) == len(hashes) - 1
    # the sde override changes only sde
    changed = merge_params(tiny, {"presets.embedded.digits.method_overrides.sde.sigma_max": 12.0})
    diff = {m for m in trained_methods(tiny) if resolved_hash(resolve(changed, "digits", m)) != hashes[m]}
    assert diff == {"sde"}


# --------------------------------------------------------------------------- sampling-only variants
def _solvers(params) -> dict:
    solvers = params.get("solver_methods") or {}
    if not solvers:
        pytest.skip("no solver_methods in the tiny config")
    return solvers


def test_solver_variants_reuse_their_model_config(tiny):
    for name, entry in _solvers(tiny).items():
        cfg = resolve(tiny, "digits", name)
        base = resolve(tiny, "digits", entry["model"])
        assert resolved_hash(cfg) == resolved_hash(base), name  # same network, no retraining
        assert cfg["method"] == base["method"]
        for k in SAMPLING_KEYS & set(entry):
            assert cfg["sampling"][k] == entry[k], (name, k)
        assert set(cfg["sampling"]) == SAMPLING_KEYS


def test_solver_variant_naming_an_unknown_model(tiny):
    name = next(iter(_solvers(tiny)))
    bad = copy.deepcopy(tiny)
    bad["solver_methods"][name]["model"] = "nosuch"
    msg = _error(bad)
    assert f"solver_methods/{name}/model" in msg and "'nosuch'" in msg
    _assert_allowed(msg, sorted(trained_methods(tiny)))


# --------------------------------------------------------------------------- sampler / grid / process fit
def test_fit_table_covers_every_sampler_grid_and_schema_name():
    """Every sampler and grid carries its fit (``fits``) where it is registered: the fit tables
    of ddm.registry are views of SAMPLERS and GRIDS, so no name can lack an entry."""
    from ddm import sampling, sde_samplers
    from ddm.names import GAUSSIAN, PROCESSES
    from ddm.registry import GRID_PROCESSES, GRIDS, SAMPLER_FINAL_STEPS, SAMPLER_PROCESSES, SAMPLERS

    assert list(SAMPLERS) == [*sampling.SAMPLERS, *sde_samplers.SAMPLERS] == method_props()["sampler"]["enum"]
    assert list(GRIDS) == [*sampling.GRIDS, *sde_samplers.GRIDS] == method_props()["grid"]["enum"]
    assert set(SAMPLER_PROCESSES) == set(SAMPLERS) and set(GRID_PROCESSES) == set(GRIDS)
    kinds = set(PROCESSES) | set(GAUSSIAN)
    for name in SAMPLERS:
        assert SAMPLER_PROCESSES[name] and set(SAMPLER_PROCESSES[name]) <= kinds, name
        assert SAMPLERS.info(name)["label"], name  # the solver table writes it
    for name in GRIDS:
        assert GRID_PROCESSES[name] and set(GRID_PROCESSES[name]) <= kinds, name
        assert GRIDS.info(name)["label"], name
    for sampler, steps in SAMPLER_FINAL_STEPS.items():
        assert sampler in SAMPLERS and steps[0] == "paper"
        assert steps == ("paper",) or steps in sampling.FINAL_STEPS.values(), (sampler, steps)


def _tiny_experiment(tiny, process: str, ht: str = "constant"):
    from ddm.experiment import build

    method = {"ddm": "ddm", "vp": "ddpm", "ve": "sde"}[process]
    params = merge_params(tiny, {"ht": ht})
    cfg = resolve(params, "digits", method)
    return build(cfg)


@pytest.mark.parametrize("process,ht", [("ddm", "constant"), ("ddm", "linear"), ("vp", None), ("ve", None)])
def test_what_the_fit_table_allows_runs(tiny, process, ht):
    """Every (sampler, grid) the table allows for a process runs on it: N calls, finite output."""
    import torch

    from ddm.snapshot import grids_for, samplers_for
    from ddm.registry import get_sampler, make_grid
    from ddm.sampling import SampleRNG

    exp = _tiny_experiment(tiny, process, ht or "constant")
    net = exp.make_model().eval()
    for sampler in samplers_for(process, ht):
        for grid in grids_for(process, ht):
            options = {"polynomial": {"rho": 2.0}, "sde": {"t_end": 1e-3},
                       "lambda": {"process": exp.process, "t_end": 1e-3}}.get(grid, {})
            rng = SampleRNG(range(2))
            with torch.no_grad():
                x = get_sampler(sampler)(net, exp.process, rng.randn((1, 8, 8)) * exp.prior_std,
                                         make_grid(grid, 3, **options), rng=rng)
            assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), (process, ht, sampler, grid)


@pytest.mark.parametrize("process,sampler", [("vp", "ddm"), ("ddm", "ve_em"), ("ve", "vp_em")])
def test_the_misfits_of_issue_12_would_fail_in_the_sample_job(tiny, process, sampler):
    """What the validation prevents: these pairs fail only inside the sampler, after training."""
    import torch

    from ddm.snapshot import samplers_for
    from ddm.registry import get_sampler
    from ddm.sampling import SampleRNG, uniform_grid

    assert sampler not in samplers_for(process)
    exp = _tiny_experiment(tiny, process)
    rng = SampleRNG(range(2))
    with pytest.raises(AttributeError), torch.no_grad():
        get_sampler(sampler)(exp.make_model().eval(), exp.process, rng.randn((1, 8, 8)), uniform_grid(2), rng=rng)


@pytest.mark.parametrize("change,needles", [
    ({"methods.ddpm.sampler": "ddm"}, ["methods/ddpm", "sampler 'ddm'", "process 'vp'"]),
    ({"methods.ddm.sampler": "ve_em"}, ["methods/ddm", "sampler 've_em'", "process 'ddm'"]),
    ({"methods.sde.sampler": "vp_ancestral"}, ["methods/sde", "sampler 'vp_ancestral'", "process 've'"]),
    ({"ablation_methods.ht_sin.sampler": "dpmpp_2m"}, ["ablation_methods/ht_sin", "ht 'sin'", "Gaussian path"]),
    ({"ablation_methods.ht_exp.grid": "lambda"}, ["ablation_methods/ht_exp", "grid 'lambda'", "ht 'exp'"]),
    ({"solver_methods.ddpm_2m.sampler": "ve_em"}, ["solver_methods/ddpm_2m (model 'ddpm')", "process 'vp'"]),
    ({"ht": "quadratic", "solver_study": True}, ["solver_methods/ddm_ddim", "ht 'quadratic'"]),
    ({"ht": "exp", "ablations": True, "methods.ddm.grid": "lambda"}, ["methods/ddm", "grid 'lambda'", "ht 'exp'"]),
    ({"presets.embedded.digits.method_overrides.ddpm": {"sampler": "ve_em"}},
     ["methods/ddpm (with presets/embedded/digits/method_overrides/ddpm)", "sampler 've_em'"]),
], ids=["vp-ddm", "ddm-ve_em", "ve-vp_ancestral", "sin-2m", "exp-lambda", "solver-on-vp", "solver-study-quadratic",
        "main-ht-lambda", "override"])
def test_sampler_or_grid_misfit_names_method_sampler_process_and_allowed(tiny, change, needles):
    from ddm.snapshot import grids_for, samplers_for

    bad = merge_params(tiny, change)
    msg = _error(bad)
    for needle in needles:
        assert needle in msg, msg
    first = msg.splitlines()[0]
    process = re.search(r"process '(\w+)'", first).group(1)
    ht = re.search(r"ht '(\w+)'", first)
    allowed = samplers_for if "sampler '" in first else grids_for
    _assert_allowed(first, allowed(process, ht.group(1) if ht else None))
    with pytest.raises(ConfigError):  # `ddm sample --method M` of that method fails the same way
        method = re.search(r"params.yaml: \w+/(\w+)", first).group(1)
        resolve(bad, "digits", method)


def test_a_misfit_that_is_switched_off_is_allowed(tiny):
    """`ht: main` methods follow the top-level ht: with h_t = linear the DDIM variants misfit,
    but with the solver study off they never run (so `dvc exp run -S ht=linear` works)."""
    params = merge_params(tiny, {"ht": "linear"})
    validate(params)
    with pytest.raises(ConfigError, match="sampler 'ddim' does not fit process 'ddm' with ht 'linear'"):
        resolve(params, "digits", "ddm_ddim")
    # a fixed h_t is checked whether or not its section is switched on
    assert not tiny["ablations"]
    _error(merge_params(tiny, {"ablation_methods.ht_linear.sampler": "ddim"}))


def test_final_step_must_fit_the_sampler():
    from ddm.snapshot import fit_error

    assert fit_error("ddm", "uniform", "ddm", "linear", "x0_head") is None
    assert fit_error("ve_em", "sde", "ve", None, "denoise") is None
    msg = fit_error("ddim", "uniform", "ddm", "constant", "x0_head")
    assert "final_step 'x0_head'" in msg and "sampler 'ddim'" in msg and "(allowed: paper)" in msg


# --------------------------------------------------------------------------- params.yaml as text
def test_yaml_syntax_error_names_line_and_column(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("preset: embedded\nht: constant\nseed: [0\nlong_nfe: false\n")
    with pytest.raises(ConfigError) as e:
        load_params(p)
    msg = str(e.value)
    assert re.match(rf"{re.escape(str(p))}:4:\d+: YAML syntax error: ", msg), msg
    assert len(msg.splitlines()) == 1
    p.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_params(p)
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path)  # a folder


def test_read_yaml_refuses_a_duplicate_key_with_both_lines(tmp_path):
    """A key given twice in one mapping (YAML keeps the last one silently) names both lines and
    where it is; a merge key (`<<: *anchor`) overridden by its own keys is no duplicate."""
    from ddm.yamlio import read_yaml, read_yaml_lines

    p = tmp_path / "p.yaml"
    p.write_text("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:5: duplicate key 'c' in b \(first at line 3\)"):
        read_yaml(p)
    p.write_text("base: &base {x: 1, y: 2}\nuse:\n  <<: *base\n  x: 3\n")
    data, lines = read_yaml_lines(p)
    assert data["use"] == {"x": 3, "y": 2} and lines[("use", "x")] == 4


def test_memory_bounds_come_from_ddm_memory_or_the_cap(monkeypatch):
    from ddm import limits

    monkeypatch.delenv("DDM_MEMORY", raising=False)
    assert limits.memory_limit(here=False)[0] == limits.JOB_MEMORY_CAP
    assert limits.memory_limit()[0] > 0
    assert limits.nfe_error(1000) is None and "7.3 TiB" in limits.nfe_error(10 ** 12)
    monkeypatch.setenv("DDM_MEMORY", "64GiB")
    assert limits.memory_limit(here=False) == (64 << 30, "DDM_MEMORY=64GiB")
    assert limits.samples_error(50000, 3, 256, here=False)  # 50,000 samples of 3x256x256: 82 GiB
    monkeypatch.setenv("DDM_MEMORY", "lots")
    with pytest.raises(ConfigError, match="DDM_MEMORY='lots'"):
        limits.memory_limit()


def test_errors_name_the_layer_that_set_the_value():
    from ddm.yamlio import ConfigLayer, name_source

    layers = (ConfigLayer("params.yaml", {"ht": "constant", "presets": {"p": {"d": {"nfe": [2]}}}},
                          {("ht",): 2, ("presets", "p", "d", "nfe"): 30}),
              ConfigLayer("x.yaml", {"presets": {"p": {"d": {"nfe": [10 ** 12]}}}}, {("presets", "p", "d", "nfe"): 4}),
              ConfigLayer("--config", {"ht": "cubic"}, {}))
    assert name_source("params.yaml: presets/p/d/nfe: too big", layers=layers) == "x.yaml:4: presets/p/d/nfe: too big"
    assert name_source("params.yaml: ht: 'cubic'", layers=layers) == "--config: ht: 'cubic'"
    assert name_source("params.yaml: seed: missing", "other.yaml") == "other.yaml: seed: missing"

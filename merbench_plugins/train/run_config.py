"""One run's configuration, resolved once at the entry point.

:func:`resolve_runs` turns the command line, the YAML (``--hyper_path`` fixed settings, or a draw from a
``model-tune.yaml`` grid), the protocol and the declared defaults into one frozen :class:`RunConfig` per
(model, seed). It records what was asked (the flags on the command line), what is used, and where each
value came from; the runners pass it down, nothing below the entry point reads the command line again,
and a run's summary JSON writes it as it is (:meth:`RunConfig.record`).

Precedence of a value: an explicit flag > the YAML > the protocol's fixed value > the declared default.
Impossible values are refused here, before any data is read, with the flag named.
"""
import argparse
import dataclasses
import difflib
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import registry
from ..config import BaseConfig
from .engine import TrainOptions, recipe_of
from .options import PROTOCOLS, load_yaml, ours, per_seed, pick

FLAG, DEFAULT = "flag", "default"


class ConfigError(ValueError):
    """A run configuration that cannot be trained; the message names the flag or key and what to do."""


@dataclass(frozen=True)
class RunConfig:
    """What one run (one model, one seed) trains and writes. ``source`` maps every key of ``settings``,
    ``training`` and ``flags`` to where its value came from: ``flag``, ``yaml:PATH`` (fixed settings),
    ``grid:PATH`` (a random draw), ``protocol:NAME``, ``data:...`` (read from the data folder),
    ``derived`` or ``default``."""

    runner: str                                   # "train" (standalone) | "main-robust"
    model: str
    seed: int
    seeds: Tuple[int, ...]                        # every seed of this invocation (--seeds), this one included
    dataset: str
    feat_type: str
    features: Tuple[Optional[str], Optional[str], Optional[str]]   # audio, text, video feature names
    out: str                                      # output folder of this seed (--out / --save_root)
    training: TrainOptions                        # the engine's options (output dims set once the data is read)
    batch_size: int = 32
    folds: int = 5                                # standalone cross-validation folds (MERBench: its dataloader's)
    data_dir: str = ""
    label_path: Optional[str] = None
    device: str = "cpu"
    threads: int = 0
    select_on: str = "clean"
    fold_parallel: bool = True
    parallel_seeds: bool = False
    compile: bool = False
    quiet: bool = False
    savemodel: bool = False
    robust_eval: bool = False
    robust_kinds: Tuple[str, ...] = ()
    robust_seed: int = 0
    nonfinite: str = "error"                      # non-finite features: refuse (error) or zero as missing
    emotions: Tuple[str, ...] = ()                # the emotion classes labels are checked against (--emotions)
    settings: Mapping[str, Any] = field(default_factory=dict)     # the model's hyperparameters as used
    settings_from: str = "declared defaults"      # one line: declared defaults | drawn from PATH | from PATH
    flags: Mapping[str, Any] = field(default_factory=dict)        # every flag's value as used (upstream contract)
    source: Mapping[str, str] = field(default_factory=dict)
    asked: Mapping[str, Any] = field(default_factory=dict)        # the flags given on the command line

    def __post_init__(self):
        checks = [(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
                  (self.threads >= 0, f"--threads must be >= 0 (0 = torch's default), got {self.threads}"),
                  (self.seed >= 0, f"seeds must be >= 0, got {self.seed}"),
                  (self.runner != "train" or self.folds >= 2, f"--folds must be at least 2, got {self.folds}")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from ..evaluate.robust_eval import KINDS
        unknown = [k for k in self.robust_kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"--robust_kinds: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")

    @property
    def keep_state(self) -> bool:
        """Fold checkpoints are kept in memory: to save them, or to score them under robust evaluation."""
        return self.savemodel or self.robust_eval

    def namespace(self, **extra) -> argparse.Namespace:
        """The argparse namespace that code written for MERBench's contract reads (models, MERBench's
        dataloaders, checkpoints): every flag as used, the model's settings, the seed, ``extra`` (data dims)."""
        values = dict(self.flags)
        values.update(self.settings)
        values.update(model=self.model, seed=self.seed, **extra)
        return argparse.Namespace(**values)

    def record(self) -> dict:
        """This configuration for a JSON summary: asked, used (settings, training, flags) and sources."""
        def plain(v):
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, Mapping):
                return {str(k): plain(x) for k, x in v.items()}
            return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["training"] = dataclasses.asdict(self.training)
        return plain(out)

    def protocol_record(self) -> dict:
        """The training settings a result depends on besides the model's settings and the seed (kept in the
        summary, so ``summarize`` never averages runs of different protocols as seeds)."""
        t = self.training
        record = dict(protocol=self.flags.get("protocol"), epochs=t.epochs, batch_size=self.batch_size,
                      l2=t.weight_decay, scheduler=t.scheduler, early_stop=t.early_stop, emo_weight=t.emo_weight,
                      val_weight=t.val_weight, amp=t.amp, optimizer=t.optimizer, average=t.average,
                      select_on=self.select_on, robust_recipe=t.recipe is not None)
        if t.recipe is not None:
            record.update(zip(("recipe_corrupt", "recipe_dropout", "recipe_strength"), t.recipe))
        if self.runner == "train":
            record["folds"] = self.folds
        return record


# ---------------------------------------------------------------------------------------------------------
# the command line


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Dict[str, Any]:
    """dest -> value of every flag given on the command line (the parser's defaults left out)."""
    saved = [(a, a.default) for a in parser._actions]
    defaults = dict(parser._defaults)
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        return vars(parser.parse_args(list(argv)))
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults.update(defaults)


def seed_list(text: Optional[str], seed: int) -> List[int]:
    """``--seeds`` ("0,1,2" or "0 1 2") as ints, else ``[--seed]``."""
    if text is None:
        return [seed]
    words = text.replace(",", " ").split()
    if not words or any(not w.lstrip("-").isdigit() for w in words):
        raise ConfigError(f"--seeds takes comma-separated integers, e.g. --seeds 0,1,2; got {text!r}")
    seeds = [int(w) for w in words]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text} names a seed twice; name each once")
    return seeds


def resolve_protocol(values: Mapping[str, Any], given: Mapping[str, Any]) -> Tuple[dict, dict]:
    """(optimizer, average, scheduler, early_stop) that ``--protocol`` fixes or lets the flags choose, and their
    sources. ``merbench`` is main-release.py's loop: a contradicting --scheduler/--early_stop is refused."""
    name = values.get("protocol") or "ours"
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {name!r}: use {' or '.join(sorted(PROTOCOLS))}")
    fixed = PROTOCOLS[name]
    for flag in ("scheduler", "early_stop"):
        if flag in fixed and flag in given and given[flag] != fixed[flag]:
            raise ConfigError(f"--protocol {name} runs main-release.py's constant learning rate over every epoch; "
                              f"drop --{flag} {given[flag]}, or use --protocol ours")
    used = dict(optimizer=fixed["optimizer"], average=fixed["average"],
                scheduler=fixed.get("scheduler", values.get("scheduler") or "cosine"),
                early_stop=fixed.get("early_stop", values.get("ours_early_stop", 12)
                                     if values.get("early_stop") is None else values["early_stop"]))
    source = {k: f"protocol:{name}" if k in fixed else FLAG if k in given else DEFAULT for k in used}
    return used, source


def tune_source(values: Mapping[str, Any], model: str, default_yaml: Optional[str], *,
                draw_by_default: bool = False) -> Optional[str]:
    """The grid a run draws from, or None for the declared defaults (``--hyper_path`` wins over both).

    A run draws only with ``--tune`` or an explicit ``--tune_yaml``, or when ``draw_by_default``
    (MERBench's own models under main-robust.py, as in main-release.py)."""
    if values.get("hyper_path"):
        return None
    if values.get("tune_yaml"):
        return values["tune_yaml"]
    tune = values.get("tune", False)
    if tune and not default_yaml:
        raise ConfigError("--tune needs a grid: pass --tune_yaml model-tune.yaml "
                          "(write one with `python -m merbench_plugins yaml --write model-tune.yaml`)")
    return default_yaml if tune or draw_by_default else None


def yaml_entry(path: str, model: str, *, grid: bool) -> dict:
    """The YAML's settings for ``model`` (one value per key; from a grid, the lists stay for :func:`pick`)."""
    try:
        table = load_yaml(path)
    except SystemExit as exc:               # load_yaml speaks to the command line; here it is a config error
        raise ConfigError(str(exc).replace("error: ", "", 1)) from None
    if model not in table:
        hint = ("drop --tune/--tune_yaml to train with the declared defaults" if grid else
                "add one (`python -m merbench_plugins yaml` prints ours)")
        raise ConfigError(f"{path} has no entry for model {model!r} (has: {', '.join(map(str, table)) or 'none'}); "
                          f"{hint}")
    entry = table[model] or {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: the entry of {model!r} must map option names to values, got {entry!r}")
    return entry


def model_keys(model: str, upstream_grid: Optional[str]) -> Optional[Dict[str, str]]:
    """Accepted YAML key -> option name: a registered model's declared options (and their aliases);
    for MERBench's models the keys its own grid in ``toolkit/model-tune.yaml`` uses (None: unknown)."""
    try:
        config = registry.get_model_entry(model).config
    except KeyError:
        if not upstream_grid:
            return None
        try:
            table = load_yaml(upstream_grid)
        except SystemExit:
            return None
        entry = table.get(model)
        return {k: k for k in entry} if isinstance(entry, dict) else None
    keys = {}
    for f in config.fields():
        keys[f.name] = f.name
        keys.update({alias: f.name for alias in f.metadata.get("aliases", ())})
    return keys


def check_keys(entry: Mapping[str, Any], model: str, path: str, known: Optional[Mapping[str, str]]) -> dict:
    """``entry`` with aliases renamed; an unknown key is refused by name (with the nearest option)."""
    if known is None:
        return dict(entry)
    for key in entry:
        if key not in known:
            near = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"{path}: {key!r} is not an option of {model}; {hint}"
                              f"(its options: {', '.join(sorted(set(known.values())))})")
    return {known[k]: v for k, v in entry.items()}


def resolve_settings(model: str, values: Mapping[str, Any], given: Mapping[str, Any], seed: int, *,
                     hyper_path: Optional[str], tune_path: Optional[str],
                     upstream_grid: Optional[str] = None) -> Tuple[dict, dict, str]:
    """(settings, their sources, one line saying where they came from) of ``model`` for a run with ``seed``.

    Registered models: every declared option, flag > YAML > declared default. MERBench's models: the YAML
    draw (main-release.py's random pick), with given flags winning, as in main-release.py."""
    path, tag = (hyper_path, "yaml") if hyper_path else (tune_path, "grid")
    drawn = {}
    if path:
        entry = check_keys(yaml_entry(path, model, grid=tag == "grid"), model, path,
                           model_keys(model, None if path == upstream_grid else upstream_grid))
        drawn = pick(entry, random.Random(seed))
    note = f"drawn from {path}" if tag == "grid" and path else f"from {path}" if path else "declared defaults"
    try:
        config = registry.get_model_entry(model).config
    except KeyError:                                # a MERBench model: its YAML entry is all it gets
        settings = {k: values[k] if values.get(k) is not None else v for k, v in drawn.items()}
        settings.update({k: v for k, v in given.items() if k in BaseConfig.defaults()})
        source = {k: FLAG if k in given else f"{tag}:{path}" for k in settings}
        return settings, source, note
    chosen = {k: v for k, v in drawn.items() if v is not None}
    chosen.update({f.name: values[f.name] for f in config.fields() if values.get(f.name) is not None})
    try:
        cfg = config.from_args(chosen)
        cfg.check()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{model}: {exc}") from None
    settings = dataclasses.asdict(cfg)
    source = {k: FLAG if values.get(k) is not None else f"{tag}:{path}" if k in chosen else DEFAULT
              for k in settings}
    return settings, source, note


def training_options(values: Mapping[str, Any], given: Mapping[str, Any], settings: Mapping[str, Any],
                     settings_source: Mapping[str, str]) -> Tuple[TrainOptions, dict]:
    """The engine's options from the training flags, the protocol and the model's learning rate."""
    protocol, source = resolve_protocol(values, given)
    lr = settings.get("lr") if settings.get("lr") is not None else values.get("lr")
    source["lr"] = settings_source.get("lr", FLAG if "lr" in given else DEFAULT)
    for key, flag in (("epochs", "epochs"), ("weight_decay", "l2"), ("emo_weight", "emo_weight"),
                      ("val_weight", "val_weight"), ("amp", "amp"), ("show_progress", "quiet"),
                      ("recipe", "robust_recipe")):
        source[key] = FLAG if flag in given else DEFAULT
    try:
        opts = TrainOptions(epochs=values["epochs"], lr=1e-3 if lr is None else float(lr),
                            weight_decay=values["l2"], emo_weight=values["emo_weight"],
                            val_weight=values["val_weight"], amp=bool(values.get("amp")),
                            show_progress=not values.get("quiet"), recipe=recipe_of(values), **protocol)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return opts, source


def resolve_runs(parser: argparse.ArgumentParser, argv: Sequence[str], *, runner: str, models: Sequence[str],
                 values: Mapping[str, Any], derived: Optional[Mapping[str, Tuple[Any, str]]] = None,
                 default_yaml: Optional[str] = None, upstream_grid: Optional[str] = None,
                 out_flag: str = "--out") -> List[RunConfig]:
    """One :class:`RunConfig` per model and seed.

    ``values``: the parsed flags (``vars(parser.parse_args(argv))``); ``derived``: flag -> (value, source)
    the entry point worked out itself (features from synthetic.json, MERBench's feat_scale and save_root
    suffix); ``default_yaml``: the grid ``--tune`` draws from; ``upstream_grid``: MERBench's own
    ``toolkit/model-tune.yaml`` (its models draw from it, as in main-release.py, and their YAML keys are
    checked against it)."""
    given = given_flags(parser, argv)
    values = dict(values)
    sources = {k: FLAG if k in given else DEFAULT for k in values}
    for key, (value, where) in (derived or {}).items():
        values[key] = value
        sources[key] = where
    seeds = seed_list(values.get("seeds"), values["seed"])
    if values.get("parallel_seeds") and values.get("seeds") is None:
        raise ConfigError("--parallel_seeds needs --seeds, e.g. --seeds 0,1,2 --parallel_seeds")
    out_key = out_flag.lstrip("-")
    if len(seeds) > 1 and "{seed}" not in values[out_key]:
        print(f"note: the {len(seeds)} seeds write into one folder ({values[out_key]}); put {{seed}} in {out_flag} "
              f"for one folder per seed", flush=True)
    configs = []
    for model in models:
        for seed in seeds:
            # our models: declared defaults unless --tune/--tune_yaml; MERBench's: main-release.py's random pick
            grid = tune_source(values, model, default_yaml, draw_by_default=bool(upstream_grid) and not ours(model))
            settings, settings_source, note = resolve_settings(model, values, given, seed,
                                                               hyper_path=values.get("hyper_path"), tune_path=grid,
                                                               upstream_grid=upstream_grid)
            training, training_source = training_options(values, given, settings, settings_source)
            flags = {k: v for k, v in values.items() if k not in settings}
            flags.update(optimizer=training.optimizer, average=training.average, scheduler=training.scheduler,
                         early_stop=training.early_stop)
            flags["seed"], flags[out_key] = seed, per_seed(values[out_key], seed)
            source = dict(sources, **settings_source, **{f"training.{k}": v for k, v in training_source.items()})
            configs.append(RunConfig(
                runner=runner, model=model, seed=seed, seeds=tuple(seeds), dataset=values.get("dataset") or "",
                feat_type=values.get("feat_type") or "utt",
                features=(values.get("audio_feature"), values.get("text_feature"), values.get("video_feature")),
                out=flags[out_key], training=training, batch_size=values["batch_size"], folds=values.get("folds") or 0,
                data_dir=values.get("data_dir") or "", label_path=values.get("label_path"),
                device=str(values.get("device", values.get("gpu", "cpu"))), threads=values.get("threads") or 0,
                select_on=values["select_on"], fold_parallel=values["fold_parallel"],
                parallel_seeds=bool(values.get("parallel_seeds")), compile=bool(values.get("compile")),
                quiet=bool(values.get("quiet")), savemodel=bool(values.get("savemodel")),
                robust_eval=bool(values.get("robust_eval")),
                robust_kinds=tuple(k for k in (values.get("robust_kinds") or "").split(",") if k),
                robust_seed=values.get("robust_seed", 0), nonfinite=values.get("nonfinite") or "error",
                emotions=tuple(e.strip() for e in (values.get("emotions") or "").split(",") if e.strip()),
                settings=settings, settings_from=note, flags=flags,
                source=source, asked=given))
    return configs

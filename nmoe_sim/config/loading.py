"""Loading a scenario: the only code that reads scenario YAML. Presets merged, ``--set``
overrides applied, then validation into a frozen :class:`Scenario`; every error becomes one
:class:`~nmoe_sim.errors.ConfigError` line naming the key path and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nmoe_sim.config.assets import CHANNEL_PRESETS_DIR, SCENARIOS_DIR, TOPOLOGY_PRESETS_DIR
from nmoe_sim.config.scenario import Scenario
from nmoe_sim.errors import ConfigError
from nmoe_sim.yaml_read import parse_yaml_text, read_yaml_file


def preset_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _load_preset(folder: Path, name: str, key: str) -> dict[str, Any]:
    # Only a file of the preset folder: a name is never a path ("../x" reads nothing).
    if name not in preset_names(folder):
        raise ConfigError(
            f"{key}: unknown preset {name!r}; known: {', '.join(preset_names(folder))}"
        )
    path = folder / f"{name}.yaml"
    data = read_yaml_file(path, key) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping")
    return data


def _expand_preset(node: Any, folder: Path, key: str) -> Any:
    """A preset reference is a name, or a mapping with ``preset: name`` plus overrides."""
    if isinstance(node, str):
        return _load_preset(folder, node, key)
    if isinstance(node, dict) and "preset" in node:
        rest = {k: v for k, v in node.items() if k != "preset"}
        if not isinstance(node["preset"], str):
            raise ConfigError(f"{key}.preset: must be a preset name")
        base = _load_preset(folder, node["preset"], key)
        base.update(rest)
        return base
    return node


def resolve_presets(raw: dict[str, Any]) -> dict[str, Any]:
    net = raw.get("network")
    if not isinstance(net, dict):
        return raw
    if "topology" in net:
        net["topology"] = _expand_preset(net["topology"], TOPOLOGY_PRESETS_DIR, "network.topology")
    chan = net.get("channel")
    if isinstance(chan, str):  # one preset for both link classes
        chan = {"bs": chan, "d2d": chan}
        net["channel"] = chan
    if isinstance(chan, dict):
        for cls in ("bs", "d2d"):
            if cls in chan:
                chan[cls] = _expand_preset(chan[cls], CHANNEL_PRESETS_DIR, f"network.channel.{cls}")
    return raw


# Where a preset may be named by a bare string; an override that reaches inside one turns
# the name into ``{preset: name}`` so the override applies on top of the preset.
_PRESET_SLOTS = {("network", "topology"), ("network", "channel", "bs"), ("network", "channel", "d2d")}


def _as_mapping(path: tuple[str, ...], node: Any) -> Any:
    if isinstance(node, str):
        if path == ("network", "channel"):  # one preset for both link classes
            return {"bs": node, "d2d": node}
        if path in _PRESET_SLOTS:
            return {"preset": node}
    return node


# An override: ``"dotted.key=yaml value"`` as --set takes it, or a ``(dotted.key, value)``
# pair whose value is already a Python object (the API's ``{"stage1.rounds": 3}``).
Override = str | tuple[str, Any]


def apply_override(raw: dict[str, Any], assignment: Override) -> None:
    """Apply one override to the user's tree (before preset expansion); the text of a
    ``KEY=VALUE`` string is parsed as YAML, the value of a pair is taken as it is."""
    if isinstance(assignment, tuple):
        key, value = assignment
        if not isinstance(key, str):
            raise ConfigError(f"override {key!r}: a key is a dotted string, e.g. stage1.rounds")
        key = key.strip()
        shown = key
    else:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stage1.rounds=5")
        key, _, text = assignment.partition("=")
        key = key.strip()
        value = parse_yaml_text(text, f"--set {key}")
        shown = assignment
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {shown!r}: empty key")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = _as_mapping(tuple(parts[: i + 1]), node.get(part))
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            path = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {key}: {path} is {nxt!r}, not a mapping")
        node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _schema_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the mapping that holds ``loc[-1]``."""
    model: Any = Scenario
    dict_key = False
    for part in loc[:-1]:
        if dict_key:  # ``part`` is a user-chosen key of a dict[str, Model] field
            dict_key = False
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                dict_key = getattr(ann, "__origin__", None) is dict
                break
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _key_text(part: Any) -> str:
    """A key of the error's path as the user wrote it; quoted when it could not be read as
    one (a newline would break the one-line error, a dot the path)."""
    text = str(part)
    return text if text and text.isprintable() and "." not in text and text.strip() == text else repr(part)


def format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = ".".join(_key_text(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _schema_fields(loc)
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    msg = " ".join(err["msg"].removeprefix("Value error, ").split())  # one line
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    more = len(exc.errors()) - 1
    extra = f" [+{more} more]" if more else ""
    # Cross-field checks sit at the top level and name their own keys in the message.
    return f"{path}: {msg}{shown}{extra}" if path else f"{msg}{extra}"


def build_scenario(raw: Any, source: str = "<scenario>") -> Scenario:
    """Validate an already preset-expanded mapping into a frozen Scenario."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def find_scenario_file(path: str | Path) -> Path:
    """``path`` itself, or the shipped scenario it names.

    A relative path that does not exist from the working directory is looked up among the
    shipped scenarios (``scenarios/quickstart.yaml`` or ``quickstart.yaml``), so that an
    installed package runs the README's and the labs' commands from any folder. A path
    that exists always wins; ``..`` never climbs out of the shipped folder.
    """
    given = Path(path)
    if given.is_absolute() or given.exists():
        return given
    parts = given.parts[1:] if given.parts[:1] == ("scenarios",) else given.parts
    if not parts or ".." in parts:
        return given
    shipped = SCENARIOS_DIR.joinpath(*parts)
    return shipped if shipped.is_file() else given


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The user's tree as written in the file (presets not expanded), checked to be a
    non-empty mapping; a missing relative path is looked up among the shipped scenarios."""
    raw = read_yaml_file(find_scenario_file(path), "scenario")
    if raw is None:
        # An empty file would silently run every default: almost surely the wrong file.
        raise ConfigError(f"{path}: the scenario file is empty; a scenario is a YAML mapping "
                          "(an empty mapping, {}, runs the defaults)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a scenario must be a YAML mapping")
    return raw


def expand(raw: dict[str, Any], overrides: list[Override] | tuple[Override, ...] = ()) -> dict[str, Any]:
    """A copy of the user's tree with ``overrides`` applied, then presets expanded once.

    Overrides go first so that one naming a preset (``network.channel.bs.preset=harsh``)
    picks what is expanded, and one setting a key inside a preset wins over the preset.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        apply_override(out, item)
    return resolve_presets(out)


def scenario_from_raw(raw: Any, overrides: list[Override] | tuple[Override, ...] = (),
                      source: str = "<scenario>") -> Scenario:
    """The loader: the user's tree (as read from YAML) plus overrides -> a frozen Scenario.
    Raises nothing but ConfigError for any input."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping")
    return build_scenario(expand(raw, overrides), source)


def load_raw(path: str | Path, overrides: list[Override] | tuple[Override, ...] = (), *,
             expanded: bool = True) -> dict[str, Any]:
    """Read a scenario file and apply overrides; presets expanded unless ``expanded=False``
    (a sweep keeps the user's tree, so that a point's override can name a preset)."""
    raw = read_scenario_file(path)
    if not expanded:
        out = copy.deepcopy(raw)
        for item in overrides:
            apply_override(out, item)
        return out
    return expand(raw, overrides)


def load_scenario(path: str | Path, overrides: list[Override] | tuple[Override, ...] = ()) -> Scenario:
    return scenario_from_raw(read_scenario_file(path), overrides, str(path))


def dump_yaml(scenario: Scenario) -> str:
    return yaml.safe_dump(scenario.to_dict(), sort_keys=False)

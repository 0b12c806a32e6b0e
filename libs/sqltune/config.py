"""One config mechanism for every entry point: typed dataclasses, YAML presets, ``key=value`` overrides.

A config class is a dataclass deriving from :class:`Config` whose fields are declared with
:func:`param` (a default plus a one-line doc, optional bounds). Options are ``Literal[...]`` types, so
the valid choices live in the type. Nested configs are dataclass fields. Example::

    @dataclass
    class LoraConfig(Config):
        r: int = param(16, "LoRA rank.", min=1)
        mode: Literal["qlora", "lora", "full"] = param("qlora", "What to train.")

    cfg = parse_cli(TrainConfig, ["--config", "jobs/configs/tiny.yaml", "lora.r=32"])

Every error names the file or flag, the key, the bad value, and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from sqltune.errors import ConfigError

C = TypeVar("C", bound="Config")
_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    doc: str = "",
    *,
    min: float | None = None,  # noqa: A002 - mirrors the user-facing word
    max: float | None = None,  # noqa: A002
    default_factory: Any = _MISSING,
) -> Any:
    """Declare a config field with its documentation and optional numeric bounds."""
    meta = {"doc": doc, "min": min, "max": max}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        value = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    # each class's annotations resolve in its own module's namespace, so a config may extend one from
    # another module (the dataset spec of sqltune.data, for instance)
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/override value to the annotated type, or raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not a valid choice; choose one of {list(choices)}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp) or (Any,)
        items = [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: {value!r} is not a boolean; use true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: {value!r} is not an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: {value!r} is not a string")
    return value


def _check_bounds(cls: type, obj: Any, where: str) -> None:
    for f in dataclasses.fields(cls):
        v = getattr(obj, f.name)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{where}{f.name}: {v!r} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(f"{where}{f.name}: {v!r} is above the maximum {hi}")


def _unknown_key(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    moved = getattr(cls, "MOVED_KEYS", {}).get(key)
    if moved:  # a key that was renamed: name its new spelling, whatever difflib would guess
        return ConfigError(f"{where}{key}: unknown key (did you mean {moved!r}? {key!r} was renamed {where}{moved})")
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}{key}: unknown key{hint}; valid keys of {cls.__name__}: {', '.join(names)}")


def _from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    prefix = f"{where}." if where else ""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(cls, str(key), prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    _check_bounds(cls, obj, prefix)
    if isinstance(obj, Config):
        try:
            obj.validate()
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}" if prefix else str(exc)) from None
    return obj


@dataclasses.dataclass
class Config:
    """Base of every config: validation hook, dict/YAML round trip, field docs."""

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError naming the fields. Subclasses override."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        return _from_dict(cls, data or {}, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def describe(cls) -> str:
        """Human-readable list of every field, its type, default and doc (for ``--help``)."""
        lines: list[str] = []
        _describe(cls, "", lines)
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One documented config field: its dotted key, type, default and doc (what ``--help`` and the
    generated reference show). Fields of a list of configs are keyed ``name[].field``."""

    key: str
    type: str
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    section: bool = False  # a nested config: its fields follow with this key as prefix


def field_docs(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every field of config class ``cls``, nested configs expanded, in declaration order."""
    out: list[FieldDoc] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        doc = f.metadata.get("doc", "")
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.append(FieldDoc(key, tp.__name__, None, doc, section=True))
            out += field_docs(tp, f"{key}.")
            continue
        if get_origin(tp) is list and get_args(tp) and dataclasses.is_dataclass(get_args(tp)[0]):
            item = get_args(tp)[0]
            out.append(FieldDoc(key, f"list[{item.__name__}]", _default(f), doc, section=True))
            out += field_docs(item, f"{key}[].")
            continue
        out.append(FieldDoc(key, _type_name(tp), _default(f), doc, f.metadata.get("min"), f.metadata.get("max")))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return _MISSING


def _describe(cls: type, prefix: str, lines: list[str]) -> None:
    for fd in field_docs(cls, prefix):
        if fd.section and not fd.key.endswith("]"):
            if fd.type.startswith("list["):
                lines.append(f"  {fd.key} ({fd.type}, default {fd.default!r}): {fd.doc}")
            else:
                lines.append(f"{fd.key}:  {fd.doc}")
            continue
        default = "<required>" if fd.default is _MISSING else fd.default
        lines.append(f"  {fd.key} ({fd.type}, default {default!r}): {fd.doc}")


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r}: expected key=value (for example lora.r=32)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(out, key.strip(), value)
    return out


def merge_mappings(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``extra`` on top; nested mappings are merged key by key."""
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = merge_mappings(merged[k], v)
        else:
            merged[k] = v
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass --config with a path to a YAML preset")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build ``cls`` from an optional YAML preset plus ``key=value`` overrides (overrides win)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    if overrides:
        data = merge_mappings(data, parse_overrides(overrides))
    try:
        return cls.from_dict(data)
    except ConfigError as exc:
        source = f"{path}: " if path else ""
        raise ConfigError(f"{source}{exc}") from None


def parse_cli(cls: type[C], argv: list[str] | None = None, prog: str = "") -> C:
    """Parse ``[--config FILE] [key=value ...]`` (and ``--help``) into a validated config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path: str | None = None
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(f"usage: {prog or 'python -m ...'} [--config FILE.yaml] [key=value ...]\n")
            print(cls.describe())
            raise SystemExit(0)
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file path, e.g. --config jobs/configs/tiny.yaml")
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("--"):
            # Allow --key=value and --key value as spellings of key=value.
            body = arg[2:]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"flag {arg!r} needs a value; write {body}=VALUE")
                body = f"{body}={argv[i + 1]}"
                i += 1
            key, value = body.split("=", 1)
            overrides.append(f"{key.replace('-', '_')}={value}")
        else:
            overrides.append(arg)
        i += 1
    return load_config(cls, path, overrides)

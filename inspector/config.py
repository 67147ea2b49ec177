"""Configuration: typed sections with their defaults, loaded from a TOML file and checked strictly.

Defaults live here (and are repeated, with comments, in `config.toml`; a test keeps the two equal).
An unknown section or key, or a value of the wrong type, is a ConfigError naming the key. Relative paths
in a config file resolve against the folder of that file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.errors import ConfigError
from inspector.profile import ProfileParams

DEFAULT_CONFIG = Path("config.toml")


@dataclass(frozen=True)
class InputConfig:
    """Limits and patterns for image files."""

    max_pixels: int = 40_000_000  # larger images are rejected before decoding
    max_bytes: int = 256 * 1024 * 1024  # larger files are rejected before reading
    patterns: tuple[str, ...] = ("*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp")


@dataclass(frozen=True)
class ModelsConfig:
    """Where profiles are stored."""

    dir: Path = Path("models")


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    profile: ProfileParams = field(default_factory=ProfileParams)
    input: InputConfig = field(default_factory=InputConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    source: Path | None = None  # the file this was loaded from, if any


SECTIONS: dict[str, type] = {"profile": ProfileParams, "input": InputConfig, "models": ModelsConfig}


def _check(value: Any, tp: Any, where: str, base: Path) -> Any:
    """Return value converted to type tp, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            return path if path.is_absolute() else (base / path)
    elif origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, list):
            return tuple(_check(v, item, f"{where}[{i}]", base) for i, v in enumerate(value))
    elif origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _check(value, option, where, base)
            except ConfigError:
                continue
    else:  # pragma: no cover - a programming error in the dataclasses above
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    raise ConfigError(f"config key {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _type_name(tp: Any) -> str:
    """A short human name for a config type."""
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, str(tp)
    )


def _section(cls: type, values: Any, name: str, base: Path) -> Any:
    """Build one section dataclass from a TOML table, strictly."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {name}.{key} (known: {', '.join(sorted(known))})")
    kwargs = {key: _check(value, hints[key], f"{name}.{key}", base) for key, value in values.items()}
    defaults = cls()
    for f in dataclasses.fields(cls):  # default paths are relative to the config file's folder too
        if f.name not in kwargs and hints[f.name] is Path:
            kwargs[f.name] = _check(str(getattr(defaults, f.name)), Path, f"{name}.{f.name}", base)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section [{name}]: {exc}") from None


def from_dict(data: dict[str, Any], base: Path) -> Config:
    """Build a Config from parsed TOML, resolving relative paths against `base`."""
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section [{name}] (known: {', '.join(SECTIONS)})")
    sections = {name: _section(cls, data.get(name, {}), name, base) for name, cls in SECTIONS.items()}
    _validate(sections["profile"])
    return Config(**sections)


def _validate(p: ProfileParams) -> None:
    """Range checks that types alone do not catch."""
    checks = [
        (2 <= p.n_colours <= 64, "profile.n_colours must be between 2 and 64"),
        (0.0 < p.false_alarm_rate < 0.5, "profile.false_alarm_rate must be between 0 and 0.5"),
        (p.width >= 16, "profile.width must be at least 16"),
        (1 <= p.cells_across <= p.width, "profile.cells_across must be between 1 and profile.width"),
        (p.window_strides >= 1, "profile.window_strides must be at least 1"),
        (len(p.neighbours) > 0 and min(p.neighbours) >= 1, "profile.neighbours must be positive integers"),
        (0.0 < p.top_fraction <= 1.0, "profile.top_fraction must be in (0, 1]"),
        (p.n_folds >= 2, "profile.n_folds must be at least 2"),
        (0.0 < p.novel_quantile <= 1.0, "profile.novel_quantile must be in (0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load(path: Path | str | None = None) -> Config:
    """Load the config file at `path`; with None, ./config.toml if present, else the built-in defaults."""
    explicit = path is not None
    file = Path(path) if explicit else DEFAULT_CONFIG
    if not file.exists():
        if explicit:
            raise ConfigError(f"config file not found: {file}")
        return from_dict({}, Path.cwd())
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    cfg = from_dict(data, file.resolve().parent)
    return dataclasses.replace(cfg, source=file.resolve())

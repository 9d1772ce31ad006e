"""Configs as data: YAML files (or names of the bundled ones) -> one typed, frozen `Config`.

Every section is a frozen dataclass owned by the component it configures; this module only loads,
validates and overrides them, so a wrong key or value is one line naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import pathlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from musenet_jax.critic.config import CriticConfig
from musenet_jax.data.config import DataConfig
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.errors import UserError, closest_first
from musenet_jax.model.config import MeshConfig, ModelConfig
from musenet_jax.sample.config import SampleConfig
from musenet_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole run: one section per component."""

    name: str = "custom"
    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    data: DataConfig = DataConfig()
    encoding: EncodingConfig = EncodingConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    critic: CriticConfig = CriticConfig()

    def __post_init__(self) -> None:
        """Rules across sections (each section checks its own values)."""
        if self.model.note_off_mask and self.train.mixup_alpha > 0:
            raise UserError(
                "model.note_off_mask does not mix with train.mixup_alpha > 0 (a mixed row's partner may "
                "release notes the row does not hold); switch one of them off"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); `config_from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)

    def with_data_dir(self, data_dir: str | os.PathLike) -> Config:
        """The same run reading its dataset from `data_dir`."""
        return self.replace(data=dataclasses.replace(self.data, data_dir=str(data_dir)))


SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name != "name"
}


def _configs_root() -> Any:
    """The repo's `configs/` in a source checkout; the copy packaged as `musenet_jax.configs` in a wheel."""
    source_tree = pathlib.Path(__file__).resolve().parent.parent / "configs"
    if source_tree.is_dir():
        return source_tree
    return importlib.resources.files("musenet_jax.configs")


def bundled_config_names() -> list[str]:
    """Names accepted by `--config NAME`: the YAML files shipped in `configs/`."""
    return sorted(p.name[: -len(".yaml")] for p in _configs_root().iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> tuple[str, Mapping[str, Any]]:
    path = pathlib.Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise UserError(
                f"--config {name_or_path} is a folder; expected a YAML file or a bundled config name "
                f"({', '.join(bundled_config_names())})"
            )
        if not path.is_file():
            raise UserError(f"config file {name_or_path!r} does not exist")
        text, name = path.read_text(), path.stem
    else:
        names = bundled_config_names()
        if name_or_path not in names:
            raise UserError(
                f"unknown config {name_or_path!r}; valid: {', '.join(closest_first(name_or_path, names))}"
                " (or a path to a .yaml file)"
            )
        text = (_configs_root() / f"{name_or_path}.yaml").read_text()
        name = name_or_path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config {name_or_path!r} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, Mapping):
        raise UserError(f"config {name_or_path!r} must be a mapping of sections")
    return name, data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turns a YAML or command-line value into the field's declared type, or says what was expected."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            shown = [str(c) for c in choices]
            raise UserError(
                f"bad value {value!r} for {where}; valid: {', '.join(closest_first(str(value), shown))}"
            )
        return value
    if origin in (tuple, Sequence) or annotation is tuple:
        (item_type, *_rest) = typing.get_args(annotation) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"bad value {value!r} for {where}; expected a list (a,b,c)")
        return tuple(_coerce(v, item_type, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or value == "null":
            return None
        return _coerce(value, args[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"bad value {value!r} for {where}; expected true or false")
    if annotation in (int, float, str):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if annotation is int and isinstance(value, str):
                return int(float(value)) if float(value).is_integer() else int(value)
            return annotation(value)
        except (TypeError, ValueError):
            raise UserError(f"bad value {value!r} for {where}; expected {annotation.__name__}") from None
    return value


def _build_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise UserError(
                f"unknown key {section}.{key}; valid keys of {section}: "
                f"{', '.join(closest_first(key, valid))}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as err:  # a section's own __post_init__ validation
        raise UserError(str(err)) from None


def config_from_dict(data: Mapping[str, Any], name: str = "custom") -> Config:
    """Builds a validated `Config` from nested plain data (a YAML file, a checkpoint's saved config)."""
    sections: dict[str, Any] = {}
    for section, values in data.items():
        if section == "name":
            name = str(values)
            continue
        if section not in SECTIONS:
            raise UserError(
                f"unknown config section {section!r}; valid: {', '.join(closest_first(section, SECTIONS))}"
            )
        if not isinstance(values, Mapping):
            raise UserError(f"config section {section!r} must be a mapping of keys to values")
        sections[section] = _build_section(SECTIONS[section], values, section)
    return Config(name=name, **sections)


def parse_override(text: str) -> tuple[str, str, Any]:
    """`model.d_model=256` -> ('model', 'd_model', 256)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"bad --set {text!r}; expected section.key=value, e.g. model.d_model=256")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        merged.setdefault(section, {})
        if not isinstance(merged[section], dict):
            raise UserError(f"bad --set {text!r}: {section!r} is not a config section")
        merged[section][key] = value
    return merged


def load_config(name_or_path: str = "tiny", overrides: Sequence[str] = ()) -> Config:
    """Loads a bundled config by name or a YAML file by path, then applies `section.key=value` overrides."""
    name, data = _read_yaml(name_or_path)
    return config_from_dict(apply_overrides(data, overrides), name=name)


def with_overrides(cfg: Config, overrides: Sequence[str], sections: Sequence[str]) -> Config:
    """`cfg` (e.g. a trained run's saved config) with `section.key=value` overrides, only of `sections`."""
    for text in overrides:
        section = parse_override(text)[0]
        if section not in sections:
            raise UserError(
                f"--set {text}: only {', '.join(s + '.*' for s in sections)} can change here; the other "
                "sections define the trained model"
            )
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides), name=cfg.name)

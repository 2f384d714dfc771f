"""Config fields as command-line options, generically: ``--set key.path=value`` overrides any field of a command's
pydantic config, and each command's help lists those keys from the models' field descriptions.

Also the settings models of the training commands (the nets' own configs plus the loop settings the training
functions take as arguments), so every training knob is one validated key instead of a hand-mapped option.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icon.implicit import ImplicitConfig
from icon.normal_net import NormalNetConfig
from icon.train_implicit import ImplicitTrainConfig


class OverrideError(ValueError):
    """A ``--set`` item is malformed or names an unknown key (the message says which and lists the valid ones)."""


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Nested overrides from ``["fit.pose_iters=40", "frames.fps=5"]`` (values parsed as YAML: ``5`` is an int,
    ``[512,256]`` a list, ``null`` None, ``cpu`` a string).

    Raises:
        OverrideError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise OverrideError(f"--set {item!r}: expected key.path=value, e.g. --set fit.pose_iters=40")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise OverrideError(f"--set {item!r}: {'.'.join(parts[:-1])} is set to a value and used as a section")
            node = child
        node[parts[-1]] = value
    return out


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _model_type(arg)) is not None:
                return found
    return None


def config_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Every settable leaf key of ``model`` (dotted) with its default and description, e.g.
    ``{"fit.pose_iters": "default 150. Adam steps of the pose stage."}``."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        sub = _model_type(field.annotation)
        key = f"{prefix}{name}"
        if sub is not None:
            keys.update(config_keys(sub, f"{key}."))
            continue
        default = field.get_default(call_default_factory=True)
        keys[key] = f"default {default!r}. {field.description or ''}".strip()
    return keys


def keys_epilog(model: type[BaseModel], what: str) -> str:
    """Help text listing the ``--set`` keys of ``model`` (typer/click epilog; one line per key)."""
    from rich.markup import escape  # typer renders help with rich: "[512, 256]" must not read as a markup tag

    lines = [f"Keys of --set ({what}):"]
    lines += [escape(f"  {key}: {text}") for key, text in config_keys(model).items()]
    return "\n".join(lines)


def unknown_key_message(err: ValidationError, model: type[BaseModel]) -> str:
    """One line per failing key; for unknown keys, the close valid keys."""
    import difflib

    valid = list(config_keys(model))
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        line = f"{key}: {e['msg']}"
        if e["type"] == "extra_forbidden":
            leaf = key.rsplit(".", 1)[-1]  # the same field in another section ("lr" for "train.lr"), else spelling
            close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:3] or difflib.get_close_matches(key, valid, n=3)
            line += f" (did you mean {', '.join(close)}?)" if close else " (see --help for the keys)"
        lines.append(line)
    return "; ".join(lines)


def build_settings(model: type[BaseModel], items: list[str] | None) -> BaseModel:
    """``model`` validated from its defaults plus the ``--set`` items.

    Raises:
        OverrideError: malformed item, unknown key or invalid value (the key is named).
    """
    try:
        return model.model_validate(parse_overrides(items))
    except ValidationError as e:
        raise OverrideError(f"invalid --set: {unknown_key_message(e, model)}") from e


class ImplicitTraining(BaseModel):
    """Settings of ``avatarize train implicit``: the net's architecture and the training loop."""

    model_config = ConfigDict(extra="forbid")

    net: ImplicitConfig = Field(default_factory=ImplicitConfig, description="Implicit net architecture.")
    train: ImplicitTrainConfig = Field(default_factory=ImplicitTrainConfig, description="Training loop.")
    max_samples: int | None = Field(None, ge=1, description="Train on the first N persons only (None = all).")


class NormalNetTraining(BaseModel):
    """Settings of ``avatarize train normal-net``: the net's architecture and the training loop."""

    model_config = ConfigDict(extra="forbid")

    net: NormalNetConfig = Field(default_factory=NormalNetConfig, description="Normal net architecture.")
    steps: int = Field(3000, ge=0, description="Optimiser steps.")
    batch_size: int = Field(8, ge=1, description="Images per step.")
    lr: float = Field(2e-3, gt=0, description="Peak Adam learning rate (cosine decay).")
    eval_every: int = Field(500, ge=0, description="Steps between held-out evaluations (0 = only at the end).")
    log_every: int = Field(50, ge=1, description="Steps between progress lines.")
    preload: bool = Field(True, description="Hold the shards in memory (normals as float16) instead of streaming.")
    seed: int = Field(0, description="Seeds initialisation, data order and augmentation.")
    chunk_minutes: float | None = Field(
        None, gt=0, description="Stop after this many minutes with a checkpoint; the same command continues the run "
        "and reaches the weights of one uninterrupted run (None: run to the end).",
    )

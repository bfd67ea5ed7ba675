"""The CLI's config flags, generated from `RunConfig`: one surface for flags, YAML and job overrides.

A command lists the config fields it takes; each becomes an option whose help and default come from
the field's docstring and default, so help text never disagrees with the config. The command gets
the flags the user gave as one dict of overrides (None and False mean "not given").

Example::

    @app.command()
    @config_flags("model", "corpus", "max_tokens")
    def prepare(overrides: dict, local: bool = False): ...
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, Literal, Optional

import typer

from attnsim.config import RunConfig

# Short or historical names of some flags; every other flag is --field-name.
FLAG_NAMES = {
    "model": ("--model", "-m"),
    "out": ("--out", "-o"),
    "similarity_kind": ("--similarity",),
    "k": ("--k",),
}
# Config fields a command can take as flags: scalars, Literals and the tier list. Nested settings
# (`labels`) are set in YAML or as job overrides (labels.anchor_share=0.3).
LIST_FIELDS = {"tiers"}


def field_help(name: str) -> str:
    """The field's docstring, its choices and its default, e.g. for `--k`."""
    field = RunConfig.model_fields[name]
    text = (field.description or "").replace("\n", " ")
    text = text[:1].upper() + text[1:]
    if text and not text.endswith("."):
        text += "."
    choices = _choices(name)
    if choices:
        text += f" One of: {', '.join(choices)}."
    default = field.default
    if name in LIST_FIELDS:
        text += " Comma list."
        default = ",".join(default)
    # Parentheses, not brackets: typer renders help with rich, which reads [..] as markup.
    if default is not None and default is not False:
        return f"{text} (default {default}; config key {name})"
    return f"{text} (config key {name})"


def _choices(name: str) -> tuple[str, ...]:
    annotation = RunConfig.model_fields[name].annotation
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return ()


def _flag_type(name: str) -> Any:
    annotation = RunConfig.model_fields[name].annotation
    if annotation is bool:
        return bool
    base = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return Optional[base[0]] if base[0] in (int, float) else Optional[str]


def _option(name: str) -> Any:
    names = FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))
    if _flag_type(name) is bool:
        return typer.Option(False, *names, help=field_help(name))
    return typer.Option(None, *names, help=field_help(name))


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave, as config overrides (lists split at commas)."""
    out = {}
    for key, value in flags.items():
        if value is None or value is False:
            continue
        if key in LIST_FIELDS:
            value = [t.strip() for t in value.split(",") if t.strip()]
        out[key] = value
    return out


def config_flags(*fields: str) -> Callable:
    """Add one option per config field to a command; it receives them as `overrides`."""
    for name in fields:
        if name not in RunConfig.model_fields:
            raise ValueError(f"{name!r} is not a RunConfig field")

    def wrap(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn)  # the command's own annotations, evaluated in its module
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def command(**kwargs):
            flags = {name: kwargs.pop(name) for name in fields}
            return fn(overrides=overrides_from_flags(flags), **kwargs)

        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values() if p.name != "overrides"]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_option(name), annotation=_flag_type(name)) for name in fields]
        command.__signature__ = signature.replace(parameters=params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer would read the undecorated signature through it
        return command

    return wrap

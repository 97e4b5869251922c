"""Settings declared once as dataclass fields, read from flags, config files and ``--set KEY=VALUE`` alike.

A *knob* is a dataclass field made with :func:`knob`: its metadata holds the help text, the command-line
spelling (``flag``, then ``aliases``), an optional validity check, and what a resumed run must keep of it.
Everything else here derives from those fields: argparse flags, the accepted config keys, type checks of
values from TOML/YAML, and error sentences. argparse and dataclasses do the parsing; what is written here
is only the mapping between the two, which neither library provides.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal

from medtune.tuning.errors import UsageError

Check = tuple[Callable[[Any], bool], str]  # (predicate, what a valid value is: "at least 1")


def knob(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    aliases: Iterable[str] = (),
    negatives: Iterable[str] = (),
    check: Check | None = None,
    resume: Literal["identity", "trajectory"] | None = None,
    metavar: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Return a dataclass field that is also a flag (``--flag``, ``--alias``...) and a config key.

    ``negatives`` are extra flags that set a boolean to False (``--no-eval``); ``resume`` says whether a
    resumed run must match it (``identity``: the model and data; ``trajectory``: the optimisation).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": tuple(aliases),
        "negatives": tuple(negatives),
        "check": check,
        "resume": resume,
        "metavar": metavar,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def knobs(cls: type) -> list[dataclasses.Field]:
    """Return the fields of ``cls`` made with :func:`knob`, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_of(f: dataclasses.Field) -> str:
    """Return the main command-line flag of a knob, e.g. ``--learning-rate``."""
    return "--" + (f.metadata["flag"] or f.name.replace("_", "-"))


def flags_named(f: dataclasses.Field) -> str:
    """Return how an error names a knob: its flag and first alias, e.g. ``--learning-rate/--lr``."""
    return "/".join([flag_of(f), *(f"--{a}" for a in f.metadata["aliases"][:1])])


def keys_of(f: dataclasses.Field) -> list[str]:
    """Return every config key naming a knob: its field name, then its flags with underscores."""
    spellings = [f.name, f.metadata["flag"] or f.name, *f.metadata["aliases"]]
    return list(dict.fromkeys(s.replace("-", "_") for s in spellings))


def hints(cls: type) -> dict[str, Any]:
    """Return the resolved type of every field of ``cls``."""
    return typing.get_type_hints(cls)


def unwrap(hint: Any) -> tuple[Any, bool]:
    """Return (the type without ``| None``, whether None is allowed)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return functools.reduce(operator.or_, args), True
    return hint, False


def choices_of(hint: Any) -> tuple[str, ...] | None:
    """Return the allowed values of a ``Literal`` type (or of a tuple of them), else None."""
    base, _ = unwrap(hint)
    if typing.get_origin(base) is tuple:
        base = typing.get_args(base)[0]
    return typing.get_args(base) if typing.get_origin(base) is Literal else None


def describe(value: Any) -> str:
    """Return how an error names a value the user gave: ``the string 'no'``, ``2.5``."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _kind(base: Any) -> str:
    if base is bool:
        return "true or false"
    if base is int:
        return "a whole number"
    if base is float:
        return "a number"
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    if typing.get_origin(base) is tuple:
        return "a list of " + (_kind(typing.get_args(base)[0]) if choices_of(base) else "names")
    return "a string"


def coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` (from a config file) as the knob's type, or raise a UsageError naming ``where``."""
    base, optional = unwrap(hint)
    if value is None and optional:
        return None
    if typing.get_origin(base) is tuple:
        # A string is a comma-separated list, as on the command line (never a list of its letters).
        items = parse_list(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise UsageError(f"{where}: {key} must be {_kind(base)}, got {describe(value)}")
        element = typing.get_args(base)[0]
        return tuple(coerce(key, i, element, where) for i in items)
    ok = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (base is str and isinstance(value, str))
        or (typing.get_origin(base) is Literal and value in typing.get_args(base))
    )
    if not ok:
        raise UsageError(f"{where}: {key} must be {_kind(base)}, got {describe(value)}{_fix(value, base)}")
    return float(value) if base is float else value


def _fix(value: Any, base: Any) -> str:
    """Return how to write a quoted number or yes/no the way the file format reads it, or ''."""
    if not isinstance(value, str) or base not in (int, float, bool):
        return ""
    try:
        parsed = parse_text(value, base)
    except ValueError:
        return ""
    return f"; write {str(parsed).lower() if base is bool else value.strip()} without quotes"


def parse_list(text: str) -> list[str]:
    """Return the items of a comma-separated list; ``none`` (or nothing) is the empty list."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [] if [i.lower() for i in items] == ["none"] else items


def parse_text(text: str, hint: Any) -> Any:
    """Return a command-line string as the knob's type (``1e-4``, ``true``, ``q_proj,v_proj``, ``none``)."""
    base, optional = unwrap(hint)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    if typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        return tuple(parse_text(item, element) for item in parse_list(text))
    if base is bool:
        word = text.strip().lower()
        if word in ("true", "yes", "1", "on"):
            return True
        if word in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if typing.get_origin(base) is Literal:
        if text not in typing.get_args(base):
            raise ValueError(f"expected {_kind(base)}, got {text!r}")
        return text
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise ValueError(f"expected {_kind(base)}, got {text!r}") from None
    return text


class _Switch(argparse.Action):
    """A boolean flag with its ``--no-`` forms: ``--bf16`` sets True, ``--no-bf16`` (or a negative alias) False."""

    def __init__(self, option_strings, dest, negatives=(), **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.negatives = set(negatives)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.negatives)


def show(value: Any) -> str:
    """Return a setting's value as help texts and summaries write it (``none``, ``true``, ``2e-05``, ``a,b``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Iterable[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> list[argparse.Action]:
    """Add one flag per knob of ``cls`` (or those in ``names``), default None ("not given"); return them.

    With ``defaults`` the help says "default: X" (from ``defaults``, else the field's own); without, each
    help holds ``{default}`` for the caller to fill in when the help is printed (a recipe's defaults).
    """
    wanted = None if names is None else set(names)
    types_ = hints(cls)
    actions = []
    for f in knobs(cls):
        if wanted is not None and f.name not in wanted:
            continue
        m, hint = f.metadata, types_[f.name]
        strings = [flag_of(f), *(f"--{a}" for a in m["aliases"])]
        help_text = f"{m['help']} ({{default}})"
        if defaults is not None:
            help_text = help_text.format(default=f"default: {show(defaults.get(f.name, f.default))}")
        if unwrap(hint)[0] is bool:
            negatives = [f"--no-{flag_of(f)[2:]}", *(f"--{n}" for n in m["negatives"])]
            action = parser.add_argument(
                *strings,
                *negatives,
                dest=f.name,
                action=_Switch,
                negatives=negatives,
                default=None,
                help=help_text,
            )
        else:
            choices = choices_of(hint)
            base = unwrap(hint)[0]
            plain = {int: "N", float: "X"}.get(base, "TEXT")
            metavar = m["metavar"] or ("{" + ",".join(choices) + "}" if choices else plain)
            if choices and typing.get_origin(unwrap(hint)[0]) is tuple:
                metavar = m["metavar"] or ",".join(choices)

            def convert(text: str, hint=hint) -> Any:
                try:
                    return parse_text(text, hint)
                except ValueError as err:
                    raise argparse.ArgumentTypeError(str(err)) from None

            action = parser.add_argument(
                *strings, dest=f.name, type=convert, default=None, metavar=metavar, help=help_text
            )
        actions.append(action)
    return actions


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Return the knobs of ``cls`` that were given on the command line (not None)."""
    return {f.name: getattr(args, f.name) for f in knobs(cls) if getattr(args, f.name, None) is not None}


def key_table(classes: Iterable[type]) -> dict[str, dataclasses.Field]:
    """Return every accepted config key of the knobs of ``classes``, mapped to its field."""
    return {key: f for cls in classes for f in knobs(cls) for key in keys_of(f)}


def read_settings(
    data: dict[str, Any], classes: Iterable[type], where: str, *, extra: Iterable[str] = ()
) -> dict[str, Any]:
    """Return config-file ``data`` as {field name: typed value}; ``extra`` keys pass through untouched.

    One sentence (UsageError) for an unknown key, a key given twice under two names, or a value of the
    wrong type.
    """
    classes = list(classes)
    table = key_table(classes)
    types_ = {name: hint for cls in classes for name, hint in hints(cls).items()}
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in extra:
            out[key] = value
            continue
        f = table.get(key)
        if f is None:
            close = difflib.get_close_matches(key, [*table, *extra], n=1)
            also = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(
                f"{where}: unknown setting {raw_key!r}{also} (`medtune train --help` lists every setting; "
                "config keys are the flags' names with underscores)"
            )
        if f.name in seen:
            raise UsageError(
                f"{where}: {seen[f.name]} and {raw_key} are the same setting ({flag_of(f)}); keep one of them"
            )
        seen[f.name] = str(raw_key)
        out[f.name] = coerce(str(raw_key), value, types_[f.name], where)
    return out


def parse_assignment(text: str, classes: Iterable[type]) -> tuple[str, Any]:
    """Return (field name, typed value) of one ``KEY=VALUE`` given to ``--set``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r} is not KEY=VALUE; write e.g. --set learning_rate=1e-4")
    classes = list(classes)
    f = key_table(classes).get(key.strip().replace("-", "_"))
    if f is None:
        read_settings({key.strip(): None}, classes, "--set")  # raises the unknown-key sentence
    hint = {n: h for cls in classes for n, h in hints(cls).items()}[f.name]
    try:
        return f.name, parse_text(value.strip(), hint)
    except ValueError as err:
        raise UsageError(f"--set {key.strip()}: {err}") from None


def check_values(obj: Any) -> list[str]:
    """Return one problem per knob of dataclass ``obj`` whose value fails its type choices or its check."""
    problems = []
    types_ = hints(type(obj))
    for f in knobs(type(obj)):
        value = getattr(obj, f.name)
        if value is None:
            continue
        choices = choices_of(types_[f.name])
        values = value if isinstance(value, tuple) else (value,)
        if choices and any(v not in choices for v in values):
            problems.append(f"{flags_named(f)} must be one of {', '.join(choices)}, got {value!r}")
        elif f.metadata["check"] is not None and not f.metadata["check"][0](value):
            problems.append(f"{flags_named(f)} must be {f.metadata['check'][1]}, got {value!r}")
    return problems

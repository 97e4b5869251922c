"""Each dotted name under medtune.kernels is one thing: reached by import or by attribute, it is the same object."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import medtune.kernels


def submodules() -> list[str]:
    """Return the dotted names of every module under medtune.kernels (found on disk, none imported)."""
    return [
        info.name
        for info in pkgutil.walk_packages(medtune.kernels.__path__, "medtune.kernels.", onerror=print)
    ]


def test_every_submodule_is_what_its_parent_attribute_names():
    checked = []
    for name in submodules():
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # the Triton launchers where triton is not installed
            if "triton" not in str(err):
                raise
            continue
        parent, _, leaf = name.rpartition(".")
        assert getattr(importlib.import_module(parent), leaf) is module, name
        checked.append(name)
    assert {"medtune.kernels.ops.layer_norm", "medtune.kernels.ops.rms_norm"} <= set(checked)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_the_public_function_is_the_ops_modules_own_and_no_module_shadows_it(op):
    public = getattr(medtune.kernels, op)
    assert isinstance(public, types.FunctionType)
    assert public is getattr(importlib.import_module(f"medtune.kernels.ops.{op}"), op)
    assert f"medtune.kernels.{op}" not in submodules()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"medtune.kernels.{op}")

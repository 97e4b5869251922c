"""Thin nox sessions around the `medtune` command and the test suite.

PyTorch comes from ``MEDTUNE_TORCH`` (a pip requirement, default ``torch==2.13.0``, the CPU build).
A GPU user picks their build with it, e.g. ``MEDTUNE_TORCH="torch==2.5.1" nox -s train -- ...`` or
``MEDTUNE_TORCH="torch --index-url https://download.pytorch.org/whl/cu124"``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

TORCH = os.environ.get("MEDTUNE_TORCH", "torch==2.13.0")
MEMBERS: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["medtune"]["workspace"][
    "members"
]
# Every member, editable, with every extra: what `pip install "medtune[all]"` gives a user.
FULL = [
    "kernels",
    "packages/data",
    "packages/eval",
    "packages/core-models[4bit]",
    "packages/tuning[4bit,tensorboard,wandb,mlflow]",
    "packages/medtune",
]


# The members each member needs installed from this checkout (the medtune-* names are not on PyPI yet).
def _local_siblings(member: str) -> list[str]:
    """Return the members ``member`` needs (its medtune-* dependencies, recursively): not on PyPI, so
    installed from this checkout."""
    by_name = {
        tomllib.loads((ROOT / m / "pyproject.toml").read_text())["project"]["name"]: m for m in MEMBERS
    }
    found: list[str] = []

    def visit(m: str) -> None:
        project = tomllib.loads((ROOT / m / "pyproject.toml").read_text())["project"]
        for requirement in project.get("dependencies", []):
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
            if name in by_name and by_name[name] not in found:
                visit(by_name[name])
                found.append(by_name[name])

    visit(member)
    return found


LOCAL = {m: _local_siblings(m) for m in MEMBERS}
# The import names each member provides (the medtune distribution provides all five).
PROVIDES = {
    "kernels": ["kernels"],
    "packages/core-models": ["core_models"],
    "packages/data": ["data"],
    "packages/eval": ["eval"],
    "packages/tuning": ["tuning"],
    "packages/medtune": ["kernels", "core_models", "data", "eval", "tuning"],
}
ISOLATED = list(MEMBERS)
# The lower bounds nox -s compat checks (torch is MEDTUNE_TORCH's: only 2.13 and 2.14 wheels are at hand).
MINIMUMS = "transformers==5.9.0 peft==0.15.0 accelerate==1.1.0"
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3"]
TEST_ENV = {
    "TRITON_INTERPRET": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # The GPU suite (kernels/tests/test_cuda.py) also runs on the CPU, interpreted at small shapes, so
    # its own logic is checked on every run and not first on a rare GPU machine.
    "MEDTUNE_KERNELS_DRY_RUN": "1",
}


def _stamp_matches(env: Path, spec: str) -> bool:
    stamp = env / ".medtune-installed"
    return stamp.exists() and stamp.read_text() == hashlib.sha256(spec.encode()).hexdigest()


def _spec(members: list[str], extra: list[str]) -> str:
    files = [(ROOT / m.split("[")[0] / "pyproject.toml").read_text() for m in members]
    return "\n".join([TORCH, *members, *extra, *files])


def _site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _link_tree(session: nox.Session, dist: importlib.metadata.Distribution, src_env: Path, env: Path) -> None:
    """Put `dist`'s files (from its RECORD) into `env` as hard links to `src_env`'s copies.

    Files outside site-packages (console scripts in bin/) are copied, their shebang pointed at `env`'s python.
    """
    src_site, site = _site_packages(src_env), _site_packages(env)
    for rel in dist.files or ():
        src = Path(os.path.normpath(src_site / rel))
        dst = Path(os.path.normpath(site / rel))
        if not src.is_file():  # RECORD may list caches that were never written
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        if src.is_relative_to(src_site):
            try:
                os.link(src, dst)
            except OSError:  # another file system: a copy costs space but still works
                shutil.copy2(src, dst)
        else:
            data = src.read_bytes().replace(str(src_env).encode(), str(env).encode(), 1)
            dst.write_bytes(data)
            shutil.copymode(src, dst)


def _seed_from_shared(session: nox.Session, targets: list[str]) -> None:
    """Hard-link into this session's env each distribution pip would install for `targets` that the shared
    env (.nox/medtune) holds at the very same version, so pip then installs only what differs.

    The result is the environment `pip install` alone would build (pip resolves it), but PyTorch and
    Triton, 1.7 GB per env, are stored once on disk: CI's isolation envs fit beside the shared one.
    """
    shared, env = ROOT / ".nox" / "medtune", Path(session.virtualenv.location)
    if not _site_packages(shared).is_dir() or not _site_packages(env).is_dir():
        return
    report = Path(session.create_tmp()) / "pip-plan.json"
    session.run("python", "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report), *targets)
    have = {
        _canonical(d.metadata["Name"]): d
        for d in importlib.metadata.distributions(path=[str(_site_packages(shared))])
    }
    present = {
        _canonical(d.metadata["Name"])
        for d in importlib.metadata.distributions(path=[str(_site_packages(env))])
    }
    linked = []
    for item in json.loads(report.read_text())["install"]:
        if item.get("download_info", {}).get("dir_info", {}).get("editable"):
            continue  # the members themselves: pip installs them, pointing at this checkout
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if _canonical(name) in present:
            continue  # an upgrade (the venv's own setuptools, say): pip must remove the old files first
        dist = have.get(_canonical(name))
        if dist is not None and dist.version == version:
            _link_tree(session, dist, shared, env)
            linked.append(f"{name}=={version}")
    session.log(f"linked {len(linked)} distributions from {shared}: {', '.join(sorted(linked))}")


def _install(session: nox.Session, members: list[str], extra: list[str] = (), seed: bool = False) -> None:
    """Install torch then the members into the session's env, unless a reused env already has this set.

    With `seed`, first hard-link what the shared env already holds (see `_seed_from_shared`).
    """
    env, spec = Path(session.virtualenv.location), _spec(members, list(extra))
    if _stamp_matches(env, spec):
        session.log("environment up to date; skipping install (delete .nox/ to force)")
        return
    if seed:
        _seed_from_shared(session, [*shlex.split(TORCH), *[a for m in members for a in ("-e", m)], *extra])
    session.install(*shlex.split(TORCH))
    session.install(*[a for m in members for a in ("-e", m)], *extra)
    (env / ".medtune-installed").write_text(hashlib.sha256(spec.encode()).hexdigest())


def _shared_env(session: nox.Session, extra: list[str] = ()) -> Path:
    """One environment with every member for tests and all `medtune` commands, so each installs once."""
    env = ROOT / ".nox" / "medtune"
    python = env / "bin" / "python"
    spec = _spec(FULL, list(extra))
    if _stamp_matches(env, spec):
        session.log(f"reusing {env} (delete it to force a reinstall)")
        return env
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(env), external=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    session.run(*pip, *shlex.split(TORCH), external=True)
    session.run(*pip, *[a for m in FULL for a in ("-e", m)], *extra, external=True)
    (env / ".medtune-installed").write_text(hashlib.sha256(spec.encode()).hexdigest())
    return env


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (CPU; Triton kernels run through its interpreter), then the isolation checks."""
    env = _shared_env(session, TEST_TOOLS)
    session.run(str(env / "bin" / "pytest"), *(session.posargs or ["-q"]), env=TEST_ENV, external=True)
    if not session.posargs:
        for member in ISOLATED:
            session.notify(f"isolation(member={member!r})")


@nox.session
def compat(session: nox.Session) -> None:
    """The test suite against the oldest transformers, PEFT and accelerate the packages accept (MEDTUNE_TRANSFORMERS
    to pick others).

    Not in the default run: it keeps the declared lower bound honest when a change uses a newer API.
    """
    _install(
        session,
        FULL,
        [*TEST_TOOLS, *shlex.split(os.environ.get("MEDTUNE_TRANSFORMERS", MINIMUMS))],
        seed=True,  # torch and the rest are linked from the shared env; pip installs only the minimums
    )
    session.run("pytest", *(session.posargs or ["-q"]), env=TEST_ENV)


@nox.session
@nox.parametrize("member", ISOLATED)
def isolation(session: nox.Session, member: str) -> None:
    """Each package installs alone, with only its declared dependencies, and imports (tuning: and starts)."""
    _install(session, [*LOCAL.get(member, []), member], seed=True)
    for name in PROVIDES[member]:
        session.run("python", "-c", f"import medtune.{name} as m; print('imported', m.__name__)")
    if "tuning" in PROVIDES[member]:  # no extra installed: the command and its help still work
        session.run("medtune", "--help", silent=True)
        session.run("medtune", "train", "--help", silent=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check, configured once at the root."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _medtune(session: nox.Session, command: str) -> None:
    env = _shared_env(session, TEST_TOOLS)
    session.run(
        str(env / "bin" / "medtune"), command, *session.posargs, env={"HF_HUB_OFFLINE": "1"}, external=True
    )


@nox.session(venv_backend="none")
def train(session: nox.Session) -> None:
    """`medtune train ...`: with no args beyond FAMILY METHOD, tunes the built-in demo."""
    _medtune(session, "train")


@nox.session(venv_backend="none")
def eval(session: nox.Session) -> None:
    """`medtune eval RUN_DIR... --dataset SOURCE`: zero-shot / out-of-distribution evaluation."""
    _medtune(session, "eval")


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """`medtune report RUN_DIR...`: the paper's tables and plots from your runs."""
    _medtune(session, "report")


@nox.session(venv_backend="none")
def params(session: nox.Session) -> None:
    """`medtune params FAMILY METHOD ...`: parameter accounting on the meta device, no weights."""
    _medtune(session, "params")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """`medtune bench [methods|kernels]`: end-to-end method benchmark and kernel micro-benchmarks."""
    _medtune(session, "bench")

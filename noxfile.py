"""Thin nox sessions around the `medtune` command and the test suite.

PyTorch comes from ``MEDTUNE_TORCH`` (a pip requirement, default ``torch==2.13.0``, the CPU build).
A GPU user picks their build with it, e.g. ``MEDTUNE_TORCH="torch==2.5.1" nox -s train -- ...`` or
``MEDTUNE_TORCH="torch --index-url https://download.pytorch.org/whl/cu124"``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
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
# Every member, editable, with the 4-bit and TensorBoard extras: the environment a user of `medtune` gets.
FULL = [
    "kernels",
    "packages/data",
    "packages/eval",
    "packages/core-models[4bit]",
    "packages/tuning[4bit,tensorboard]",
]
# medtune-tuning needs every other member, so the shared environment is its isolation check.
ISOLATED = [m for m in MEMBERS if m != "packages/tuning"]
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


def _install(session: nox.Session, members: list[str], extra: list[str] = ()) -> None:
    """Install torch then the members into the session's env, unless a reused env already has this set."""
    env, spec = Path(session.virtualenv.location), _spec(members, list(extra))
    if _stamp_matches(env, spec):
        session.log("environment up to date; skipping install (delete .nox/ to force)")
        return
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
    """The test suite against the oldest transformers the packages accept (MEDTUNE_TRANSFORMERS to pick another).

    Not in the default run: it keeps the declared lower bound honest when a change uses a newer API.
    """
    _install(
        session,
        FULL,
        [*TEST_TOOLS, *shlex.split(os.environ.get("MEDTUNE_TRANSFORMERS", "transformers==5.9.0"))],
    )
    session.run("pytest", *(session.posargs or ["-q"]), env=TEST_ENV)


@nox.session
@nox.parametrize("member", ISOLATED)
def isolation(session: nox.Session, member: str) -> None:
    """Each package installs alone, with only its declared dependencies, and imports."""
    name = Path(member).name.replace("-", "_")
    local = {"packages/eval": ["packages/data"], "packages/core-models": ["kernels"]}.get(member, [])
    _install(session, [*local, member])
    session.run("python", "-c", f"import medtune.{name} as m; print('imported', m.__name__)")


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

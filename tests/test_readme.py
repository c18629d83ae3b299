"""The README cannot drift: every command line in its shell code blocks parses with its script's
argparse parser. Parsing only: the parser stops the command right after ``parse_args``."""
from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_MODULES = {"pytest", "pip"}  # not ours


def readme_commands() -> list[str]:
    """Command lines of the README's ``bash`` blocks: continuations joined, comments dropped, split at ``&&``."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(shlex.split(line, comments=True))
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


class Parsed(BaseException):
    """Raised by the patched parse_args: parsing succeeded, nothing else may run."""


def _target(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """("path"|"module"|"entry", what, args) for a command we own, else None (pip, pytest, cd, ...)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    if argv[0] in scripts:
        return "entry", scripts[argv[0]], argv[1:]
    if argv[0] == "torchrun":  # torchrun's own flags, then the script and its flags
        argv = ["python"] + argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]
    if argv[0] not in ("python", "python3"):
        return None
    if argv[1] == "-m":
        return None if argv[2] in SKIP_MODULES else ("module", argv[2], argv[3:])
    return "path", str(REPO / argv[1]), argv[2:]


COMMANDS = [c for c in readme_commands() if _target(shlex.split(c)) is not None]


def test_the_readme_has_commands_to_check():
    assert any("refine-models/predict.py" in c for c in COMMANDS)
    assert any("download.py" in c for c in COMMANDS) and any("seg-models/train.py" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command, monkeypatch, capsys):
    kind, what, args = _target(shlex.split(command))
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(sys, "argv", [what, *args])
    with pytest.raises(Parsed):
        try:
            if kind == "path":
                assert Path(what).is_file(), f"{command}: {what} does not exist"
                runpy.run_path(what, run_name="__main__")
            elif kind == "module":
                runpy.run_module(what, run_name="__main__", alter_sys=True)
            else:
                module, func = what.split(":")
                getattr(__import__(module, fromlist=[func]), func)(args)
        except SystemExit as exc:  # argparse refused a flag: show its message
            pytest.fail(f"{command}\n  does not parse (exit {exc.code}): {capsys.readouterr().err.strip()}")


def test_readme_patch_sizes_name_the_grid_they_give():
    """A line such as ``--patch_size 128  # p16 in pixels`` must be right on the 512-px maps."""
    from patchrefinenet.models.prn import resolve_grid

    claims = re.findall(r"--patch_size (\d+)\s+#[^\n]*?\b(p\d+)\b", (REPO / "README.md").read_text())
    assert claims
    for size, name in claims:
        assert resolve_grid(patch_size=int(size), image_size=512).aux_name == name, f"--patch_size {size} is not {name}"

"""Every benchmarks/*.py answers --help, and every `python benchmarks/...` command in the docs parses.

The scripts run in this process as ``python benchmarks/X.py ARGS`` would run them (``runpy``
with ``__name__ == "__main__"``, the script's folder first on ``sys.path``, ``sys.argv`` set), with
``argparse.ArgumentParser.parse_args`` wrapped: it parses exactly as before (an unknown flag or a
bad value still exits 2 with argparse's message) and then stops the script before it does any
work. New scripts and new documented commands are picked up by the globs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
SECONDS = 60  # per script: parsing must not wait for a benchmark


class Parsed(Exception):
    """Raised by the wrapped parse_args once the command line has parsed."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


@contextlib.contextmanager
def _time_limit(seconds: int):
    def fail(signum, frame):
        raise TimeoutError(f"the script did not reach parse_args within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_until_parsed(script: Path, args: list[str]) -> tuple[int | None, str]:
    """(exit code or None if the arguments parsed, stdout + stderr) of ``python script args`` up to its parse."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    out = io.StringIO()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(script), *args], [str(script.parent)]
    argparse.ArgumentParser.parse_args = parse_args
    try:
        with _time_limit(SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(str(script), run_name="__main__")
    except Parsed:
        return None, out.getvalue()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        return code, out.getvalue()
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path
    raise AssertionError(f"{script.name} ran to the end without calling argparse's parse_args")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_exits_zero(script):
    assert "argparse" in script.read_text(), f"{script.name} must parse its arguments with argparse"
    code, output = run_until_parsed(script, ["--help"])
    assert code == 0, f"python benchmarks/{script.name} --help exited {code}:\n{output}"
    assert "usage:" in output


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script name, arguments) of every ``python benchmarks/X.py ...`` in the docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        # Inline code spans (they may wrap over lines), then what is left, line by line (code blocks).
        spans = [m.group(1) for m in re.finditer(r"`([^`]*)`", text) if "python benchmarks/" in m.group(1)]
        rest = re.sub(r"`[^`]*`", "", text).replace("\\\n", " ")
        lines = [line.split(" #", 1)[0] for line in rest.splitlines() if "python benchmarks/" in line]
        for command in spans + lines:
            try:
                tokens = shlex.split(" ".join(command.split()))
            except ValueError:  # an unpaired quote in the prose after a command
                tokens = command.split()
            start = tokens.index("python") if "python" in tokens else None
            if start is None or start + 1 >= len(tokens) or not tokens[start + 1].startswith("benchmarks/"):
                continue
            # Usage notation: `[--flag VALUE]` is checked as if given.
            args = [t.strip("[]") for t in tokens[start + 2 :] if t.strip("[]")]
            found.append((str(page.relative_to(REPO)), tokens[start + 1], args))
    return found


COMMANDS = documented_commands()


def test_the_docs_name_benchmark_commands():
    assert len(COMMANDS) >= 20 and {"gpu_suite.py", "diffusion_digits.py"} <= {Path(c[1]).name for c in COMMANDS}


@pytest.mark.parametrize("page,script,args", COMMANDS, ids=[f"{c[0]}:{Path(c[1]).name}" for c in COMMANDS])
def test_documented_command_parses(page, script, args):
    path = REPO / script
    assert path.is_file(), f"{page} names {script}, which does not exist"
    code, output = run_until_parsed(path, args)
    assert code is None, f"{page}: `python {script} {shlex.join(args)}` does not parse (exit {code}):\n{output}"


def test_a_wrong_flag_is_caught():
    """The check itself: a flag the script does not have fails to parse."""
    code, output = run_until_parsed(REPO / "benchmarks" / "gpu_suite.py", ["--tiny", "--no-such-flag"])
    assert code == 2 and "--no-such-flag" in output

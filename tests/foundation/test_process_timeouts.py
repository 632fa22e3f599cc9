"""The test helpers for spawned processes fail on a hang, within their timeout, and leave no process behind."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests import _processes as processes

# A child that starts a grandchild (as a DDP launcher starts its workers) and both hang.
HANG = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of an exited parent may linger as a zombie until init reaps it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_run_kills_the_whole_process_group_on_timeout(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not finish within 3 s"):
        processes.run([sys.executable, "-c", HANG, str(pid_file)], timeout=3)
    assert time.monotonic() - start < 60
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild), "the grandchild survived the timeout"


def test_run_returns_what_the_process_printed():
    proc = processes.run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                         timeout=60)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr.strip()) == (3, "out", "err")


def _sleeper(rank: int) -> None:
    time.sleep(120)


def test_spawn_kills_workers_that_do_not_finish():
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not finish within 2 s"):
        processes.spawn(_sleeper, (), nprocs=2, timeout=2)
    assert time.monotonic() - start < 60

"""Spawned processes in tests end within a timeout, children included, or the test fails saying so.

``subprocess.run(timeout=...)`` kills only the direct child: a DDP launcher's workers (its
children) would live on and hold the CPU. :func:`run` starts the child in its own session
(process group) and kills the whole group on timeout; :func:`spawn` joins
``torch.multiprocessing`` workers with a deadline and kills them all when it passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest


def run(args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(args, **kwargs)`` whose process group is killed after ``timeout`` seconds."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    check = kwargs.pop("check", False)
    capture = kwargs.pop("capture_output")
    if capture:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
    with subprocess.Popen(args, start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            tail = (err or "")[-2000:] if isinstance(err, str) else ""
            pytest.fail(f"{' '.join(map(str, args[:6]))} ... did not finish within {timeout:.0f} s; "
                        f"its process group was killed. stderr tail:\n{tail}")
        finally:
            if proc.poll() is None:  # an exception other than the timeout: leave nothing behind
                _kill_group(proc.pid)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def spawn(fn: Any, args: tuple, nprocs: int, timeout: float) -> None:
    """``torch.multiprocessing.start_processes(..., start_method="spawn")`` joined within ``timeout`` seconds."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=nprocs, start_method="spawn", join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a worker failed
        if time.monotonic() >= deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5)
            pytest.fail(f"{nprocs} spawned processes of {getattr(fn, '__name__', fn)} did not finish within "
                        f"{timeout:.0f} s; they were killed")

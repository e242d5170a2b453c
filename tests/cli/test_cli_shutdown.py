"""The hard exit deadline of ``tarn up``/``tarn worker`` after SIGTERM: a graceful stop that does not
finish gets every thread's stack on stderr and ends the process, in a real process with a real signal."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest


def test_a_stop_that_hangs_past_the_deadline_dumps_the_stacks_and_exits() -> None:
    script = textwrap.dedent(
        """
        import os, signal, threading, time
        import tarn.cli.main as cli
        cli.HARD_EXIT_AFTER_GRACE_SECONDS = 1.0
        stop = cli._stop_event(0.2)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        threading.Event().wait(60)  # a graceful stop that never finishes
        """
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "SIGTERM: finishing in-flight work" in proc.stderr
    assert "Timeout (0:00:01.200000)!" in proc.stderr and "Thread 0x" in proc.stderr, proc.stderr
    assert took < 30


def test_a_stop_that_finishes_exits_normally_even_with_a_worker_thread_still_busy() -> None:
    script = textwrap.dedent(
        """
        import os, signal, threading, time
        import tarn.cli.main as cli
        stop = cli._stop_event(0.2)
        busy = threading.Thread(target=time.sleep, args=(600,), name="tarn-worker-0", daemon=True)
        busy.start()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        print("stopped", flush=False)
        cli._exit_after_stop()
        raise SystemExit(3)  # not reached: the busy worker thread means an immediate exit
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "stopped"  # flushed before the exit


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to one thread of another process (Linux tgkill), as the kernel may pick any thread
    that does not block it for a process-wide SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = {"x86_64": 234, "aarch64": 131}[platform.machine()]
    if libc.syscall(sys_tgkill, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="tgkill's syscall number")
def test_up_stops_on_a_sigterm_delivered_to_another_thread(tmp_path: Path) -> None:
    (tmp_path / "tarn.yaml").write_text("name: s\ndatasets:\n  - name: t\n")
    script = Path(sysconfig.get_path("scripts")) / "tarn"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from tarn.cli.main import main; main()"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen([*cmd, "-p", str(tmp_path), "up"], **pipes)  # type: ignore[call-overload]
    try:
        assert proc.stdout is not None
        assert "watching" in proc.stdout.readline()  # started: the main thread waits for the stop
        time.sleep(1.0)
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others, "tarn up runs its watcher and workers on threads"
        _tgkill(proc.pid, others[-1], signal.SIGTERM)
        out, err = proc.communicate(timeout=20)  # a main thread asleep in a bare wait would never wake
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGTERM: finishing in-flight work" in err
    assert out.rstrip().endswith("stopped")

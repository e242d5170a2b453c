"""The hard exit deadline of ``tarn up``/``tarn worker`` after SIGTERM: a graceful stop that does not
finish gets every thread's stack on stderr and ends the process, in a real process with a real signal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time


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

"""The benchmarks' own measuring tools: what they count must be what they say."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from benchmarks import stack
from tests.conftest import REPO_ROOT


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_thread_cpu_seconds_tells_the_main_thread_from_the_others() -> None:
    main_before, others_before = stack.thread_cpu_seconds(os.getpid())
    # A thread's count leaves /proc with it: measure while it is still alive.
    spun = threading.Event()
    release = threading.Event()

    def work() -> None:
        _spin(0.3)
        spun.set()
        release.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert spun.wait(10)
        main_after, others_after = stack.thread_cpu_seconds(os.getpid())
    finally:
        release.set()
        thread.join()
    assert others_after - others_before >= 0.25
    assert main_after - main_before < 0.2  # the main thread only waited


def test_thread_cpu_seconds_of_a_process_that_is_gone_is_zero() -> None:
    # The pid of a finished child: /proc no longer has it once it is reaped.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert stack.thread_cpu_seconds(child.pid) == (0.0, 0.0)


def test_pin_on_a_single_core_is_refused_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "worker", "--pin"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "--pin needs at least 2 cores" in output

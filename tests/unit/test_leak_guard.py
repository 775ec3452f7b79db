"""The leak guard (tests/conftest.py, tests/guards.py) fails a test that leaves a
process, a thread or a temporary file behind, naming it, and passes one that
cleans up: run on a small test file in a pytest of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]

LEAKY = '''
import subprocess, sys, tempfile, threading, time

def test_leaves_a_file():
    tempfile.mkstemp(prefix="leaky-")

def test_leaves_a_thread():
    threading.Thread(target=time.sleep, args=(30,), name="sleepy", daemon=True).start()

def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

def test_cleans_up(tmp_path):
    (tmp_path / "kept").write_text("pytest removes its tmp_path itself")
    with tempfile.TemporaryDirectory():
        pass
    t = threading.Thread(target=time.sleep, args=(0.1,))
    t.start()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_the_guard_names_each_leak_and_passes_a_clean_test(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch):
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_leaky=LEAKY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FUNCX_FLOWS_TEST_LEAK_GRACE_S", "0.5")  # leaks on purpose
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE")
    result.assert_outcomes(passed=4, errors=3)
    out = result.stdout.str()
    assert "test left behind temporary files: ['" in out and "leaky-" in out
    assert "test left behind threads: [\"'sleepy' (time.sleep, daemon)\"]" in out
    assert "test left behind processes: ['" in out and "time.sleep(30)" in out

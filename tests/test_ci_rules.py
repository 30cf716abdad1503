"""CI's rules hold: in CI only gpu-marked tests may skip, and compiled kernels that fail to build fail the suite
instead of silently leaving the CPU on NumPy (which once skipped 687 tests and passed)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_in(folder: Path, *args, **env):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=folder,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                         timeout=300)
    return run.returncode, run.stdout + run.stderr


def test_in_ci_a_skip_without_the_gpu_mark_fails(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""
        import pytest

        def test_missing_header():
            pytest.skip("no cuda_fp16.h here")

        @pytest.mark.gpu
        def test_on_a_gpu():
            pytest.skip("no GPU here")
    """))
    code, out = pytest_in(tmp_path, "-p", "no:randomly", CI="")
    assert code == 0 and "2 skipped" in out, out
    code, out = pytest_in(tmp_path, CI="true")
    assert code == 1 and "1 failed, 1 skipped" in out and "only gpu-marked tests may skip" in out, out


def test_in_ci_cpu_kernels_that_do_not_build_fail_the_suite(tmp_path):
    missing = {"CXX": str(tmp_path / "no-compiler"), "GPUNET_CACHE": str(tmp_path / "cache")}
    code, out = pytest_in(ROOT, "tests/cpu_kernels/test_binding.py", CI="true", **missing)
    assert code != 0 and "the compiled CPU kernels failed to build" in out, out
    code, out = pytest_in(ROOT, "tests/cpu_kernels/test_binding.py::TestCallChecks", CI="", **missing)
    assert code == 0 and "skipped" in out, out  # off CI: one log line and the NumPy forms, as documented

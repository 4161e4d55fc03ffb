"""The CUDA image's library check, run here for real on what this machine has: the
bitsandbytes wheel's CUDA 13 library (present here too) and the system's own libraries."""

from __future__ import annotations

import ctypes.util
import re
from pathlib import Path

from heretic import cuda_libraries
from heretic.install_check import check_install


def test_bitsandbytes_library_is_found_by_cuda_version():
    lib = cuda_libraries.bitsandbytes_library("13.0")
    assert lib is not None and lib.name == "libbitsandbytes_cuda130.so" and lib.is_file()
    assert cuda_libraries.bitsandbytes_library("9.9") is None


def test_a_library_whose_cuda_runtime_is_missing_does_not_load():
    # This machine has no nvidia-* wheels: bitsandbytes' CUDA 13 library cannot find
    # its CUDA 13 libraries (libcublas.so.13, ...), exactly what a CUDA image with a missing wheel would show.
    lib = cuda_libraries.bitsandbytes_library("13.0")
    assert lib is not None
    loaded, errors = cuda_libraries.load_all([lib])
    assert loaded == []
    assert re.search(r"libcu\w+\.so\.13: cannot open shared object file", errors[lib])


def test_load_all_loads_real_libraries_and_reports_a_broken_file(tmp_path: Path):
    libm = ctypes.util.find_library("m")
    assert libm
    broken = tmp_path / "libbroken.so.1"
    broken.write_bytes(b"not an ELF file")
    system = Path("/lib/x86_64-linux-gnu") / libm
    paths = [broken, system if system.exists() else Path(libm)]
    loaded, errors = cuda_libraries.load_all(paths)
    assert loaded == [paths[1]]
    assert list(errors) == [broken] and "libbroken.so.1" in errors[broken]


def test_check_without_nvidia_wheels_is_a_problem_not_a_crash():
    problems: list[str] = []
    versions: dict[str, str] = {}
    cuda_libraries.check("13.0", versions, problems)
    if not cuda_libraries.nvidia_libraries():  # this machine, CI: the CPU torch build
        assert problems == ["no NVIDIA libraries (nvidia-* wheels) are installed"]
    missing: list[str] = []
    cuda_libraries.check("9.9", {}, missing)
    assert "bitsandbytes has no library for CUDA 9.9" in missing


def test_host_provided_libraries_are_told_apart():
    assert cuda_libraries.HOST_PROVIDED.search("libcuda.so.1: cannot open shared object file")
    assert cuda_libraries.HOST_PROVIDED.search("libmpi.so.40: cannot open shared object file")
    assert not cuda_libraries.HOST_PROVIDED.search("libcudart.so.13: cannot open shared object")


def test_the_cpu_line_needs_no_cuda_library():
    report = check_install({"HERETIC_CUDA_LINE": "cpu"})
    assert "CUDA libraries" not in report.versions

"""DeepSpeed's CPU communication op: one build cache for every entry point (the one `make setup`
fills), a notice before a first build, and DeepSpeed's op probes kept off the console unless
something fails (`videohpm.distributed`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videohpm import distributed as vdist

REPO = Path(__file__).resolve().parents[2]
PROBE_NOISE = ("/usr/bin/ld: cannot find -laio: No such file or directory\n"
               "collect2: error: ld returned 1 exit status\n")


def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    assert vdist.extension_cache_dir() == str(tmp_path / "mine")  # the user's choice wins
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert vdist.extension_cache_dir() == str(tmp_path / "venv" / "torch_extensions")  # what make uses
    monkeypatch.setattr(sys, "prefix", "/usr")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert vdist.extension_cache_dir() == str(tmp_path / "cache" / "videohpm" / "torch_extensions")


def test_use_extension_cache_sets_the_folder_and_this_ninja(monkeypatch, tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "ninja").write_text("")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert vdist.use_extension_cache() == str(tmp_path / "venv" / "torch_extensions")
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "venv" / "torch_extensions")
    assert os.environ["PATH"] == f"{bin_dir}:/usr/bin:/bin"
    vdist.use_extension_cache()
    assert os.environ["PATH"] == f"{bin_dir}:/usr/bin:/bin"  # once


def test_notice_before_a_first_build_only(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(vdist, "_comm_op_used", lambda: True)
    vdist._build_notice()
    err = capfd.readouterr().err
    assert err == f"building DeepSpeed's CPU communication op once, a minute or two (cached in {tmp_path})\n"
    (tmp_path / "deepspeed_shm_comm").mkdir()
    (tmp_path / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").write_bytes(b"")
    assert vdist.comm_op_built()
    vdist._build_notice()
    assert capfd.readouterr().err == ""


def test_quiet_deepspeed_drops_probe_noise_only(capfd):
    with vdist.quiet_deepspeed():
        os.write(2, (PROBE_NOISE + "a real warning\n").encode())
        os.write(1, b"DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully\nkept\n")
    out = capfd.readouterr()
    assert out.err == "a real warning\n" and out.out == "kept\n"


def test_quiet_deepspeed_shows_everything_when_it_fails(capfd):
    with pytest.raises(RuntimeError, match="build failed"):
        with vdist.quiet_deepspeed():
            os.write(2, (PROBE_NOISE + "error: shm.cpp:1: something real\n").encode())
            raise RuntimeError("build failed")
    assert capfd.readouterr().err == PROBE_NOISE + "error: shm.cpp:1: something real\n"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_quiet_deepspeed_holds_a_real_link_probe(tmp_path, capfd):
    """What DeepSpeed's libaio probe runs: a link against a library this machine lacks."""
    src = tmp_path / "probe.c"
    src.write_text("void io_submit(void); int main(void) { io_submit(); return 0; }\n")
    with vdist.quiet_deepspeed():
        rc = subprocess.run(["cc", str(src), "-o", str(tmp_path / "a.out"), "-lvideohpm_no_such_lib"]).returncode
    assert rc != 0
    assert capfd.readouterr().err == ""


def test_make_setup_builds_the_op():
    """`make setup` builds the op (so no tool call pays for it); in the environment it made, a
    call finds the op built and does not build it again."""
    recipe = (REPO / "Makefile").read_text().split("$(STAMP): setup.py\n", 1)[1].split("\n\n", 1)[0]
    assert "from videohpm.distributed import build_comm_op; build_comm_op()" in recipe
    assert recipe.index("build_comm_op") < recipe.index("touch $(STAMP)")
    if not vdist._comm_op_used() or not vdist.comm_op_built():
        pytest.skip("the CPU op is not used here, or this environment was not made by `make setup`")
    so = Path(vdist.extension_cache_dir()) / "deepspeed_shm_comm" / "deepspeed_shm_comm.so"
    before = so.stat().st_mtime_ns
    t0 = time.time()
    assert vdist.build_comm_op()
    assert so.stat().st_mtime_ns == before and time.time() - t0 < 60

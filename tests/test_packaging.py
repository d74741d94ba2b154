"""`pip install .` outside the checkout: the run configs travel with the package.

The checkout (setup.py, videohpm/, configs/) is copied to a temporary folder and installed with
`pip install --no-deps --no-build-isolation --target <dir>` (no index needed: the build
backend is the venv's setuptools), then a fresh interpreter with only that folder on
`PYTHONPATH`, in a working directory without a `configs/` folder, loads configs by their
relative names.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, os
import videohpm
from videohpm.config import ConfigError, configs_dir, find_config, load_config
out = {"package": videohpm.__file__, "configs_dir": configs_dir()}
cfg = load_config("configs/finetune/k400_vit_b.yaml")  # `_base_: ssv2_vit_b.yaml` in the installed copy
out["model"] = str(cfg.model.name)
out["k400_list"] = str(cfg.data.train)
out["deepspeed"] = find_config(cfg.deepspeed.config)
out["by_name"] = find_config("pretrain/ssv2_vit_b_hpm.yaml")
try:
    load_config("configs/no_such_config.yaml")
except ConfigError as e:
    out["missing"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copy2(REPO / "setup.py", src / "setup.py")
    shutil.copytree(REPO / "videohpm", src / "videohpm", ignore=ignore)
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_installed_copy_holds_every_config(installed):
    bundled = sorted(p.relative_to(installed / "videohpm" / "configs").as_posix()
                     for p in (installed / "videohpm" / "configs").rglob("*") if p.is_file())
    ours = sorted(p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*")
                  if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    assert bundled == ours and "deepspeed/zero1.json" in bundled


def test_configs_found_from_any_directory_after_install(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    bundled = installed / "videohpm" / "configs"
    assert Path(out["package"]).resolve().parent == (installed / "videohpm").resolve()
    assert Path(out["configs_dir"]).resolve() == bundled.resolve()
    assert out["model"] == "vit_base_patch16_224"  # from the base file ssv2_vit_b.yaml
    assert "k400" in out["k400_list"].lower()  # the child's own data section
    assert Path(out["deepspeed"]).resolve() == (bundled / "deepspeed" / "zero1.json").resolve()
    assert Path(out["by_name"]).resolve() == (bundled / "pretrain" / "ssv2_vit_b_hpm.yaml").resolve()
    # the error names both places: the working directory and the installed copy
    assert str(elsewhere / "configs" / "no_such_config.yaml") in out["missing"]
    assert str(bundled / "no_such_config.yaml") in out["missing"]

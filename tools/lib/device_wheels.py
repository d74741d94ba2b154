"""The wheel set a bare GPU machine needs to run the device check, made here, installed there offline.

The device has its own Python, torch build and a few libraries (:data:`DEVICE_PROVIDES`) and no
network. :func:`wheel_set` walks the ``Requires-Dist`` metadata of this environment from the
packages the device lacks (:data:`DEVICE_ROOTS`) and keeps every distribution that neither the
device's packages nor their dependencies provide, pinned to the version installed here (so the
device runs what the CPU tests ran). :func:`build_wheels` fetches each as a binary wheel for the
device's interpreter and platform, or builds a pure wheel from its sdist (DeepSpeed, fvcore,
iopath, pytorchvideo publish sdists only), and writes ``requirements.txt`` (the roots, by name:
``pip install --no-index --find-links DIR -r DIR/requirements.txt``). :func:`missing_requirements`
checks an installed set for completeness against the device's packages.
"""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: what the device's Python has installed already: never shipped
DEVICE_PROVIDES = ("torch", "torchvision", "timm", "transformers", "einops", "safetensors", "tensorboard",
                   "scikit-learn", "numpy")
#: of those, the ones whose dependencies are taken as present too: torch's and torchvision's, and
#: what every transformers release requires; the others' dependencies vary by version, so what the
#: check needs of them is shipped
DEVICE_CORE = ("torch", "torchvision", "numpy", "pyyaml", "tqdm", "packaging")
#: what the check needs and the device lacks; their dependencies follow from the metadata
DEVICE_ROOTS = ("deepspeed", "decord", "av", "fvcore", "iopath", "pytorchvideo", "omegaconf", "pytest", "pytest-timeout", "setuptools", "wheel")
PYTHON_VERSION = "3.12"
#: the manylinux tags the device accepts (glibc ≥ 2.28), newest last
PLATFORMS = ("manylinux2010_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
#: what one device call may carry: the working tree plus these wheels
LIMIT_BYTES = 64 * 2**20


def target_environment(python_version: str = PYTHON_VERSION) -> Dict[str, str]:
    """The marker environment of the device's interpreter (Linux x86_64, CPython ``python_version``)."""
    env = dict(default_environment())
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython", extra="")
    return env


def _requirements(dist: md.Distribution, env: Dict[str, str]) -> List[Requirement]:
    reqs = [Requirement(r) for r in dist.requires or ()]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def closure(roots: Iterable[str], env: Dict[str, str], stop: Set[str] = frozenset(),
            path: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Canonical name → installed version of ``roots`` and everything they require under ``env``,
    not descending into ``stop``; reads the metadata of ``path`` (default ``sys.path``)."""
    found: Dict[str, str] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in stop:
            continue
        try:
            dist = md.distribution(name) if path is None else next(md.distributions(name=name, path=list(path)))
        except (md.PackageNotFoundError, StopIteration):
            raise LookupError(f"{name} is not installed in {sys.prefix}: run `make setup` first") from None
        found[name] = dist.version
        todo += [canonicalize_name(r.name) for r in _requirements(dist, env)]
    return found


def device_provided(env: Dict[str, str]) -> Dict[str, str]:
    """Name → version (installed here) of what the device is taken to have."""
    return {**closure(DEVICE_CORE, env), **{canonicalize_name(n): md.version(n) for n in DEVICE_PROVIDES}}


def wheel_set(python_version: str = PYTHON_VERSION) -> Dict[str, str]:
    """The distributions to ship: the roots' closure minus what the device has."""
    env = target_environment(python_version)
    roots = {canonicalize_name(r) for r in DEVICE_ROOTS}  # shipped even where the device may have them
    return closure(DEVICE_ROOTS, env, stop=set(device_provided(env)) - roots)


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fetch_wheel(name: str, version: str, dest: Path, python_version: str = PYTHON_VERSION) -> str:
    """``name==version`` into ``dest`` as a wheel the device can install: a binary wheel for
    CPython ``python_version`` on manylinux x86_64, else a pure wheel built from the sdist."""
    spec = f"{name}=={version}"
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    res = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
               "--implementation", "cp", *plat, "-d", str(dest), spec)
    if res.returncode == 0:
        return "binary"
    built = _pip("wheel", "--no-deps", "-w", str(dest), spec)
    if built.returncode != 0:
        raise RuntimeError(f"{spec}: no wheel for Python {python_version} and the sdist did not build:\n"
                           f"{res.stdout[-2000:]}\n{built.stdout[-2000:]}")
    wheels = [w.name for w in dest.glob(f"{canonicalize_name(name).replace('-', '_')}-{version}-*.whl")]
    if not wheels or not all(w.endswith("-none-any.whl") for w in wheels):
        raise RuntimeError(f"{spec}: the sdist built {wheels or 'nothing'}, not a pure wheel the device can use")
    return "built"


def tree_bytes(root: Path) -> int:
    """Bytes of the files a device call copies: tracked and untracked-but-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         stdout=subprocess.PIPE, check=True).stdout
    files = (root / p for p in out.decode().split("\0") if p)
    return sum(f.stat().st_size for f in files if f.is_file())


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_wheels(dest: Path, python_version: str = PYTHON_VERSION) -> Dict[str, object]:
    """Fill ``dest`` (emptied of old wheels first) with :func:`wheel_set`; returns a report."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins = wheel_set(python_version)
    how = {name: fetch_wheel(name, version, dest, python_version) for name, version in sorted(pins.items())}
    (dest / "requirements.txt").write_text("".join(f"{r}\n" for r in DEVICE_ROOTS))
    return {"wheels": sorted(w.name for w in dest.glob("*.whl")), "pins": pins, "how": how,
            "wheels_bytes": dir_bytes(dest)}


def missing_requirements(target: Path, python_version: str = PYTHON_VERSION) -> List[str]:
    """Requirements of the distributions installed in ``target`` (a ``pip install --target``
    folder) that neither ``target`` nor the device's packages (their closure here) satisfy."""
    env = target_environment(python_version)
    provided = device_provided(env)
    shipped = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions(path=[str(target)])}
    missing = []
    for dist in md.distributions(path=[str(target)]):
        for req in _requirements(dist, env):
            name = canonicalize_name(req.name)
            have = shipped.get(name, provided.get(name))
            if have is None or not req.specifier.contains(have, prereleases=True):
                missing.append(f"{dist.metadata['Name']} requires {req} (have: {have or 'nothing'})")
    return sorted(set(missing))

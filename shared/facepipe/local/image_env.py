"""The function images' package set, reproduced in this environment by hiding everything else.

Both images install the same things (``functions/*/Dockerfile``): CPU torch, facenet-pytorch
without its dependencies, the ``facepipe`` package with its ``dlib`` extra (and, in the recognition
image, its ``vectors`` extra), awslambdaric and aws-xray-sdk. A development environment has more
(moto, aws-sam-cli and what they pull in, e.g. ``awscrt`` and ``pyOpenSSL``, which botocore imports
whenever they are present). :func:`guard_source` is Python source that, run first in a fresh
interpreter, makes every top-level module of the other installed distributions unimportable, so
that a process imports what the image would: the benchmark's cold start measures the images'
imports, and a test proves that a handler finds every module it needs in the image's dependencies.

Example:
    >>> "boto3" in image_distributions()
    True
    >>> "moto" in image_distributions()
    False
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

# What each Dockerfile pip-installs (tests/unit/local/test_image_env.py checks them against
# this): the recognition image adds the vectors extra (LanceDB galleries and albums).
IMAGES = {
    image: ("torch", "facenet-pytorch", f"facepipe[{extras}]", "awslambdaric", "aws-xray-sdk")
    for image, extras in (("detection", "dlib"), ("recognition", "dlib,vectors"))
}
# Both images' packages: one interpreter runs both handlers (the tests, the cold-start bench).
IMAGE_INSTALLS = tuple(sorted({spec for specs in IMAGES.values() for spec in specs}))
NO_DEPS = frozenset({"facenet-pytorch"})  # installed with --no-deps


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires(name: str) -> list[str]:
    """A distribution's requirements; facepipe's from the source tree the images are built from
    (``shared/pyproject.toml``) when this is one, since an editable install's metadata keeps the
    dependencies of the day it was installed."""
    if _key(name) == "facepipe":
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        if pyproject.is_file():
            project = tomllib.loads(pyproject.read_text())["project"]
            specs = list(project.get("dependencies", []))
            for extra, extra_specs in project.get("optional-dependencies", {}).items():
                for spec in extra_specs:
                    req, _, marker = spec.partition(";")
                    only = f"({marker}) and " if marker.strip() else ""
                    specs.append(f"{req}; {only}extra == {extra!r}")
            return specs
    return metadata.distribution(name).requires or []


def image_distributions(installs: tuple[str, ...] = IMAGE_INSTALLS) -> set[str]:
    """Normalised names of the distributions an image holds: ``installs`` and, except for the
    ``--no-deps`` ones, their requirements (with the extras asked for), transitively, as far as
    they are installed here."""
    found: set[str] = set()
    todo = [Requirement(spec) for spec in installs]
    while todo:
        req = todo.pop()
        key = _key(req.name)
        try:
            metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        extras = set(req.extras)
        if key in found and not extras:
            continue
        found.add(key)
        if key in NO_DEPS:
            continue
        for spec in _requires(req.name):
            sub = Requirement(spec)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": extra}) for extra in extras or {""}
            ):
                todo.append(sub)
    return found


def hidden_modules(keep: set[str] | None = None) -> list[str]:
    """Top-level modules installed here that no distribution of the image provides."""
    keep = image_distributions() if keep is None else keep
    owners = metadata.packages_distributions()
    return sorted(
        module
        for module, dists in owners.items()
        if not any(_key(d) in keep for d in dists) and module not in sys.stdlib_module_names
    )


def guard_source(hidden: list[str] | None = None) -> str:
    """Python source that hides ``hidden`` (default: :func:`hidden_modules`) from imports in the
    interpreter that runs it: ``import awscrt`` then fails as if it were not installed."""
    names = hidden_modules() if hidden is None else hidden
    return (
        "import sys\n"
        "class _NotInImage:\n"
        f"    hidden = frozenset({sorted(names)!r})\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in self.hidden:\n"
        "            raise ModuleNotFoundError(f'{name} is not in the function image', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NotInImage())\n"
    )

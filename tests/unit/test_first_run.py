"""A fresh machine: every test dependency is declared, the licence is the one pyproject
names, and the sample gallery needs nothing."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

from lookalike.client.cli import main
from tests.imagegen import person_image

ROOT = Path(__file__).resolve().parents[2]
# Imported by a benchmark but installed apart, each with the reason it cannot be in the dev
# extra (the benchmark's docstring says how to install it).
INSTALLED_APART = {
    # benchmarks/face_network.py: `pip install face_recognition --no-deps`; its requirement
    # `dlib` makes pip compile dlib from source, while dlib-bin already provides the module.
    "face_recognition",
}


def imported_top_level(folder: Path) -> set[str]:
    """Top-level names imported by the .py files of ``folder``, relative imports left out."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def installed_with(extra: str) -> set[str]:
    """Normalised names of every distribution `pip install 'lookalike[extra]'` brings in."""
    seen: set[str] = set()
    todo = [Requirement(f"lookalike[{extra}]")]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            lines = requires(req.name) or []
        except PackageNotFoundError:
            continue
        for line in lines:
            dep = Requirement(line)
            wanted = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in wanted):
                todo.append(dep)
    return {key.split("[")[0] for key in seen}


def test_every_test_and_benchmark_import_is_declared_in_the_dev_extra():
    """CI once passed only because the system Python had hypothesis; the dev extra did not."""
    imported = imported_top_level(ROOT / "tests") | imported_top_level(ROOT / "benchmarks")
    local = {"lookalike", "tests", *(p.stem for p in (ROOT / "benchmarks").glob("*.py"))}
    distributions = packages_distributions()
    declared = installed_with("dev")
    missing = {
        name: distributions.get(name)
        for name in imported - local - INSTALLED_APART - set(sys.stdlib_module_names)
        if not any(d.lower().replace("_", "-") in declared for d in distributions.get(name, []))
    }
    assert missing == {}, f"imported by tests or benchmarks but not in lookalike[dev]: {missing}"


def test_sample_gallery_is_drawn_offline(tmp_path, capsys):
    out = tmp_path / "sample"
    assert main(["sample-gallery", str(out), "--people", "3", "--photos", "2", "--size", "64"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert files[:2] == ["person_00/person_00_0001.jpg", "person_00/person_00_0002.jpg"]
    assert len(files) == 6
    assert "synthetic cartoon faces" in capsys.readouterr().out
    # The same drawings as the tests' gallery: one generator, not two.
    assert person_image(1, 1, 64).size == (64, 64)


def test_sample_gallery_refuses_nonsense(tmp_path, capsys):
    assert main(["sample-gallery", str(tmp_path / "s"), "--people", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "LICENSE" in project["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text

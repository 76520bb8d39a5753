"""The two distributions as a user gets them: metadata, licence, install docs, and the built artefacts.

The quick tests read ``pyproject.toml``, the READMEs and the docs. The slow one builds both
wheels and sdists as a release would (``python -m build``, isolated: setuptools comes from the
package index), runs ``twine check``, looks inside the artefacts, installs the core wheel alone
into a fresh virtual environment and scores a store with that environment's ``uqeval``.

It took 3 to 4 minutes of wall time (about 90 s of CPU) on a 2-core machine busy with other jobs: the
two builds about 50 s, the install about 85 s (pip from a nearby package mirror, without
byte-compiling), the first score's numba compilation most of the rest. The fresh venv must
get uqeval's dependencies from the package index: the point is to install what the wheel
declares, so it cannot borrow them from the test's own environment (``--system-site-packages``
would add only the base interpreter's packages, and a ``.pth`` pointing at the test venv would
also expose its editable uqeval and uqeval-torch).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from uqeval.plugins import LOAD_PLUGINS_ENV

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "uqeval-torch"
REPOSITORY = "https://github.com/uqeval/uqeval"
#: Each distribution's folder and the import package it ships.
DISTRIBUTIONS = {"uqeval": (ROOT, "uqeval"), "uqeval-torch": (PLUGIN, "uqeval_torch")}
#: What every distribution's metadata must declare, for a package index.
URL_NAMES = {"Homepage", "Documentation", "Source", "Issues"}


def project(folder: Path) -> dict:
    """The ``[project]`` table of ``folder/pyproject.toml``."""
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_the_metadata_has_licence_classifiers_urls_and_keywords(name):
    folder, _ = DISTRIBUTIONS[name]
    metadata = project(folder)
    assert metadata["name"] == name
    assert metadata["license"] == "MIT"
    assert metadata["license-files"] == ["LICENSE"]
    licence = (folder / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the uqeval developers" in licence
    classifiers = metadata["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(classifier.startswith("Programming Language :: Python :: 3.") for classifier in classifiers)
    assert not [classifier for classifier in classifiers if classifier.startswith("License ::")]  # PEP 639
    assert set(metadata["urls"]) == URL_NAMES
    assert all(url.startswith(REPOSITORY) for url in metadata["urls"].values()), metadata["urls"]
    assert metadata["keywords"]


def test_uqeval_torch_ships_py_typed():
    assert (PLUGIN / "uqeval_torch" / "py.typed").is_file()
    settings = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in settings["package-data"]["uqeval_torch"]


def test_distributed_is_in_the_cluster_extra_only():
    """The core installs without dask.distributed; ``--scheduler`` needs ``uqeval[cluster]``,
    which ``make`` installs so that the tests of ``--scheduler`` run."""
    core = project(ROOT)
    names = [re.split(r"[<>=!~\[; ]", requirement)[0] for requirement in core["dependencies"]]
    assert "distributed" not in names
    assert core["optional-dependencies"]["cluster"] == ["distributed>=2024.6"]
    makefile = (ROOT / "Makefile").read_text().splitlines()
    [install] = [line for line in makefile if "pip install" in line and " -e " in line]
    assert '-e ".[test,cluster]"' in install
    assert '-e "plugins/uqeval-torch[examples]"' in install


def test_no_uqeval_module_imports_distributed_when_imported():
    """Every module of the core imports with dask.distributed missing (as in an install
    without the cluster extra); only ``--scheduler`` needs it, when it runs."""
    code = (
        "import pkgutil, sys\n"
        "sys.modules['distributed'] = None\n"  # `import distributed` now raises ImportError
        "import uqeval\n"
        "names = [m.name for m in pkgutil.walk_packages(uqeval.__path__, 'uqeval.') if m.name != 'uqeval.__main__']\n"
        "for name in names:\n"
        "    __import__(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20


def test_nibabel_is_an_extra_that_the_tests_install_and_no_module_imports_it_up_front():
    """``uqeval import`` reads NIfTI with nibabel, from the ``import`` extra; the test extra
    installs it so that the importers' tests run; every module imports without it."""
    core = project(ROOT)
    names = [re.split(r"[<>=!~\[; ]", requirement)[0] for requirement in core["dependencies"]]
    assert "nibabel" not in names
    assert core["optional-dependencies"]["import"] == ["nibabel>=5"]
    assert "nibabel>=5" in core["optional-dependencies"]["test"]
    code = (
        "import pkgutil, sys\n"
        "sys.modules['nibabel'] = None\n"
        "import uqeval\n"
        "for m in pkgutil.walk_packages(uqeval.__path__, 'uqeval.'):\n"
        "    if m.name != 'uqeval.__main__': __import__(m.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


def test_scoring_without_a_scheduler_does_not_need_distributed(synthetic_store, monkeypatch):
    import uqeval

    store = synthetic_store(n_images=12, size=16)
    monkeypatch.setitem(sys.modules, "distributed", None)
    scores = uqeval.score(store, tasks=["oodd"])
    assert scores.entanglement


#: The long descriptions on a package index: every link must work there.
LONG_DESCRIPTIONS = (ROOT / "README.md", PLUGIN / "README.md")


@pytest.mark.parametrize("readme", LONG_DESCRIPTIONS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_readme_links_are_absolute(readme):
    assert project(readme.parent)["readme"] == "README.md"
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    assert links
    relative = [link for link in links if not link.startswith("https://")]
    assert not relative, f"{readme.name}: links that break on a package index: {relative}"


def test_the_readme_keeps_the_two_commands_of_the_developers_guide():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


#: ``pip install uqeval`` or ``uqeval-torch`` (with extras) by name from an index, where neither is published.
FROM_AN_INDEX = re.compile(r"pip install\b[^\n`]*?(?<![\w./@\"'-])uqeval(-torch)?(\[[^\]]*\])?(?=[\s`\"']|$)")


def test_no_doc_installs_uqeval_from_a_package_index():
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").rglob("*.md")),
        *sorted((ROOT / "examples").rglob("*.py")),
        *sorted(PLUGIN.rglob("*.md")),
        *sorted(PLUGIN.rglob("*.py")),
    ]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FROM_AN_INDEX.search(line)
    ]
    assert not found, "uqeval is not on a package index yet:\n" + "\n".join(found)


def test_the_index_pattern_tells_a_name_from_a_path():
    assert FROM_AN_INDEX.search("pip install uqeval")
    assert FROM_AN_INDEX.search("pip install monai uqeval plugins/uqeval-torch")
    assert FROM_AN_INDEX.search("`pip install uqeval-torch[examples]`")
    assert not FROM_AN_INDEX.search("pip install ./plugins/uqeval-torch")
    assert not FROM_AN_INDEX.search('pip install "uqeval @ git+https://github.com/uqeval/uqeval"')
    assert not FROM_AN_INDEX.search("pip install dist/uqeval-0.1.0-py3-none-any.whl")


# The slow round trip: build, check, install, score.

#: What a build needs of each distribution's folder (setuptools puts nothing else in an sdist).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")


def run(command: list[str | Path], *, timeout: int, what: str, **options) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure or timeout, fail naming ``what`` with the end of its output."""
    try:
        result = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False, **options
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"")[-3000:] if isinstance(error.stdout, bytes) else (error.stdout or "")[-3000:]
        pytest.fail(f"{what}: no result after {timeout} s\n{output}")
    if result.returncode != 0:
        pytest.fail(f"{what}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def source_copy(folder: Path, package: str, destination: Path) -> Path:
    """``folder``'s build inputs and import package, without caches or build leftovers."""
    destination.mkdir(parents=True)
    for name in BUILD_INPUTS:
        if (folder / name).exists():
            shutil.copy2(folder / name, destination / name)
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(folder / package, destination / package, ignore=ignored)
    return destination


def user_environment() -> dict[str, str]:
    """This environment without what points Python at the checkout (``PYTHONPATH``) or
    at the test venv, and with every plugin allowed."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", LOAD_PLUGINS_ENV}
    return {key: value for key, value in os.environ.items() if key not in drop}


@pytest.mark.slow
def test_the_wheels_build_pass_twine_and_the_core_wheel_scores_from_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    built = {}
    for name, (folder, package) in DISTRIBUTIONS.items():
        source = source_copy(folder, package, tmp_path / "src" / name)
        run([sys.executable, "-m", "build", "--outdir", dist, source], timeout=600, what=f"python -m build ({name})")
        stem = name.replace("-", "_")
        [wheel] = dist.glob(f"{stem}-*.whl")
        [sdist] = dist.glob(f"{stem}-*.tar.gz")
        built[name] = (wheel, sdist, package)
    run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())], timeout=120, what="twine check")

    for wheel, sdist, package in built.values():
        with zipfile.ZipFile(wheel) as archive:
            members = set(archive.namelist())
            [info] = {member.split("/")[0] for member in members if member.endswith(".dist-info/METADATA")}
            metadata = archive.read(f"{info}/METADATA").decode()
        assert f"{info}/licenses/LICENSE" in members, sorted(members)
        assert f"{package}/py.typed" in members
        assert "License-Expression: MIT" in metadata
        assert "Classifier: Typing :: Typed" in metadata
        assert f"Project-URL: Issues, {REPOSITORY}/issues" in metadata
        assert re.search(r"^Keywords: .*uncertainty", metadata, re.MULTILINE)
        with tarfile.open(sdist) as archive:
            names = archive.getnames()
        top = names[0].split("/")[0]
        assert f"{top}/LICENSE" in names
        assert not [member for member in names if member.startswith(f"{top}/tests/")], "a partial test suite"
    core_members = set(zipfile.ZipFile(built["uqeval"][0]).namelist())
    for template in ("score.html.j2", "compare.html.j2", "report.css", "report.js"):
        assert f"uqeval/report/templates/{template}" in core_members  # report.html's templates ship
    core_metadata = zipfile.ZipFile(built["uqeval"][0]).read("uqeval-0.1.0.dist-info/METADATA").decode()
    assert 'Requires-Dist: distributed>=2024.6; extra == "cluster"' in core_metadata
    assert not re.search(r"^Requires-Dist: distributed[^;]*$", core_metadata, re.MULTILINE)

    venv = tmp_path / "venv"
    env = user_environment()
    run([sys.executable, "-m", "venv", venv], timeout=120, what="python -m venv", env=env)
    python, uqeval_cli = venv / "bin" / "python", venv / "bin" / "uqeval"
    # --no-compile: byte-compiling every dependency doubled the install's CPU time.
    run(
        [python, "-m", "pip", "install", "--no-compile", "--quiet", built["uqeval"][0]],
        timeout=900,
        what="pip install of the core wheel into a fresh venv (dependencies from the package index)",
        env=env,
    )
    where = run(
        [python, "-c", "import importlib.util as u, uqeval; print(uqeval.__file__, u.find_spec('distributed'))"],
        timeout=60,
        what="import uqeval",
        env=env,
        cwd=tmp_path,
    )
    module, distributed = where.stdout.split()
    assert Path(module).is_relative_to(venv), f"uqeval came from {module}, not the wheel"
    assert distributed == "None", "the core installed dask.distributed without the cluster extra"

    store, report = tmp_path / "cube.zarr", tmp_path / "report"
    synth = [uqeval_cli, "synth", store, "--images", "16", "--size", "16", "--eu", "3", "--au", "4"]
    run(synth, timeout=300, what="uqeval synth from the wheel", env=env, cwd=tmp_path)
    scored = run(
        [uqeval_cli, "score", store, "--out", report, "--no-plots"],
        timeout=600,
        what="uqeval score",
        env=env,
        cwd=tmp_path,
    )
    assert "Entanglement" in scored.stdout
    assert (report / "scores.json").is_file() and (report / "metrics.csv").is_file()
    assert "Entanglement" in (report / "report.html").read_text(encoding="utf-8")
    hint = subprocess.run(
        [uqeval_cli, "train"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False
    )
    assert hint.returncode == 2
    assert "comes with the PyTorch plugin uqeval-torch" in " ".join(hint.stderr.replace("│", " ").split())

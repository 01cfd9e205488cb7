"""The install is reproducible: every dependency is pinned in constraints.txt (which install.sh
uses), the pins fall inside pyproject's ranges, and the system packages install.sh promises work."""

from __future__ import annotations

import re
import subprocess
import tomllib
import wave
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from tests.conftest import need_program

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", line)
            assert match, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [req for req in map(Requirement, listed) if canonicalize_name(req.name) != "corral"]


def test_install_sh_installs_from_the_constraints_file() -> None:
    script = (ROOT / "install.sh").read_text()
    assert "-c constraints.txt" in script
    assert script.count('"${CONSTRAINTS[@]}"') >= 2  # torch and everything else


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"the pin {req.name}=={pinned[name]} is outside pyproject's range {req.specifier}"


def test_the_tests_run_against_the_pins() -> None:
    """The environment under test is the pinned one (direct dependencies, local labels aside)."""
    pinned = pins()
    for req in requirements():
        installed = Version(metadata.version(req.name))
        assert Version(installed.base_version) == pinned[canonicalize_name(req.name)], \
            f"{req.name} {installed} is installed but constraints.txt pins {pinned[canonicalize_name(req.name)]}"


def test_espeak_ng_speaks(tmp_path: Path) -> None:
    espeak = need_program("espeak-ng")
    out = tmp_path / "hello.wav"
    subprocess.run([espeak, "-w", str(out), "hello from corral"], check=True, capture_output=True, timeout=60)
    with wave.open(str(out)) as audio:
        assert audio.getnframes() / audio.getframerate() > 0.5  # seconds of speech


def test_chromium_renders_a_page(tmp_path: Path) -> None:
    chromium = need_program("chromium")
    page = tmp_path / "page.html"
    page.write_text("<p id='x'></p><script>document.getElementById('x').textContent = 6 * 7</script>")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/p",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert '<p id="x">42</p>' in done.stdout, done.stderr[-2000:]


def test_the_wheel_ships_the_ui_and_the_export_templates(tmp_path: Path) -> None:
    """A non-editable install has the files that are no Python modules: the web UI and the templates
    `corral export` renders."""
    import shutil
    import sys
    import zipfile

    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "test-artifacts", "*.egg-info", "__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("corral-*.whl"))).namelist())
    templates = {f"corral/export/templates/{p.name}" for p in (ROOT / "src/corral/export/templates").glob("*.j2")}
    assert templates and templates <= names, sorted(templates - names)
    assert {"corral/ui/index.html", "corral/ui/app.js", "corral/ui/pages/chat.js"} <= names

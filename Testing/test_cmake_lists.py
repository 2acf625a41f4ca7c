"""The Slicer extension build files list exactly what the modules install.

A Python file missing from ``MODULE_PYTHON_SCRIPTS`` is silently left out of the built
extension (the module then fails to import in Slicer), so every ``.py`` of the module
file, ``RegC2PLib`` and ``RegC2PSlicer`` must be listed, every listed file must exist,
and data files inside the packages must be listed as resources.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"RegC2P": ("RegC2PLib", "RegC2PSlicer"), "RegC2PTraining": ()}
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def cmake_list(text: str, variable: str, module: str) -> list[str]:
    """Entries of ``set(VARIABLE ...)`` with ``${MODULE_NAME}`` expanded."""
    match = re.search(rf"set\(\s*{variable}\b(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    entries = [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()]
    return [e.replace("${MODULE_NAME}", module) for e in entries if e]


def package_files(module_dir: Path, packages: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(Python files, other files) the module installs from its packages, relative to module_dir."""
    scripts, data = set(), set()
    for package in packages:
        for path in (module_dir / package).rglob("*"):
            if not path.is_file() or IGNORED_PARTS & set(path.parts) or path.suffix == ".pyc":
                continue
            (scripts if path.suffix == ".py" else data).add(path.relative_to(module_dir).as_posix())
    return scripts, data


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_installed_python_file_is_listed_and_exists(module):
    module_dir = ROOT / module
    text = (module_dir / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    assert len(listed) == len(set(listed)), "duplicate entries"
    scripts, data = package_files(module_dir, MODULES[module])
    expected = {f"{module}.py"} | scripts
    missing = sorted(expected - set(listed))
    assert not missing, f"add to {module}/CMakeLists.txt MODULE_PYTHON_SCRIPTS: {missing}"
    absent = sorted(f for f in listed if not (module_dir / f).is_file())
    assert not absent, f"listed in {module}/CMakeLists.txt but missing: {absent}"
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    for entry in resources:
        assert (module_dir / entry).is_file(), f"resource {entry} does not exist"
    unlisted_data = sorted(data - set(resources))
    assert not unlisted_data, f"add to {module}/CMakeLists.txt MODULE_PYTHON_RESOURCES: {unlisted_data}"
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py\s*\)", text)


def test_module_resources_include_icon_ui_requirements_and_batch_script():
    text = (ROOT / "RegC2P" / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", "RegC2P")
    for needed in (
        "Resources/Icons/RegC2P.png",
        "Resources/UI/RegC2P.ui",
        "Resources/requirements.txt",
        "Resources/Scripts/RegC2PBatch.py",
    ):
        assert needed in resources


def test_extension_top_level_declares_every_module_and_the_pytorch_dependency():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\(RegC2P\)", text)
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == sorted(MODULES)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    assert re.search(r"find_package\(Slicer( [0-9.]+)? REQUIRED\)", text)
    assert (ROOT / "Resources" / "Icons" / "RegC2P.png").is_file()

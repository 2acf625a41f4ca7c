"""The extension is ready for Slicer's extension catalog (the ExtensionsIndex checks, run offline).

The catalog entry ``RegC2P.json`` must satisfy the catalog-entry schema its ``$schema``
names (v1.0.1, the one Slicer 5.8 and 5.10 ship; its rules are written out below), and
the ExtensionsIndex checks a submission: LF line endings; an ``https``/``git`` repository
URL whose repository name starts with "Slicer" while the extension's does not; a
top-level ``CMakeLists.txt`` whose ``project()`` is the extension name, with an icon URL
and at least one screenshot URL that point to images; a license file at the root; a
repository under 100 MB. URLs are checked against this checkout: each names a file of the
repository (``.../raw/<branch>/<path>``) that must exist and be a PNG.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "RegC2P.json"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
# The rules of that schema (draft-07), in our words: required keys, nothing else, each key's type.
CATALOG_ENTRY_RULES = {
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cmake() -> dict[str, str]:
    """``set(EXTENSION_X "value")`` of the top-level CMakeLists.txt, plus its project name as ``PROJECT``."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    values = dict(re.findall(r'set\s*\((EXTENSION_\w+)\s*"([^"]*)"\s*\)', text))
    values["PROJECT"] = re.search(r"project\s*\(\s*([^\s)]+)", text, re.I).group(1)
    return values


def _repository_file(url: str) -> Path:
    """The file of this checkout a catalog URL (``https://github.com/OWNER/REPO/raw/BRANCH/PATH``) names."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "github.com", url
    owner_repo_raw_branch_path = parts.path.strip("/").split("/")
    assert owner_repo_raw_branch_path[2] == "raw", url
    return ROOT.joinpath(*owner_repo_raw_branch_path[4:])


def test_catalog_entry_follows_its_schema(entry):
    assert entry["$schema"] == SCHEMA_URL
    jsonschema.validate(entry, CATALOG_ENTRY_RULES)
    assert b"\r" not in ENTRY.read_bytes()  # LF line endings only


def test_names_and_repository_url_follow_the_index_rules(entry, cmake):
    assert ENTRY.stem == cmake["PROJECT"] and not ENTRY.stem.lower().startswith("slicer")
    url = urlsplit(entry["scm_url"])
    assert url.scheme in ("https", "git")
    repository = Path(url.path).stem
    assert repository.startswith("Slicer")
    assert cmake["EXTENSION_HOMEPAGE"].rstrip("/").endswith(url.path.removesuffix(".git"))  # one repository


def test_catalog_entry_and_cmake_agree(entry, cmake):
    assert entry["category"] == cmake["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split()
    assert entry["build_subdirectory"] == "."


def test_icon_and_screenshots_are_images_in_the_repository(cmake):
    icon = _repository_file(cmake["EXTENSION_ICONURL"])
    assert icon.read_bytes()[:8] == PNG
    assert sitk.ReadImage(str(icon)).GetSize() == (128, 128)  # the size the catalog shows
    screenshots = cmake["EXTENSION_SCREENSHOTURLS"].split()
    assert screenshots, "the index rejects an empty EXTENSION_SCREENSHOTURLS"
    for url in screenshots:
        path = _repository_file(url)
        assert path.read_bytes()[:8] == PNG, url
        width, height = sitk.ReadImage(str(path)).GetSize()[:2]
        assert width >= 400 and height >= 200, url


def test_license_file_at_the_root_matches_the_package_license():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    declared = re.search(r'^license = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert declared.group(1) == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0" in license_text


def test_repository_is_under_the_index_size_limit():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    size = sum((ROOT / name.decode()).stat().st_size for name in files if name and (ROOT / name.decode()).is_file())
    assert size < 100 * 1024 * 1024

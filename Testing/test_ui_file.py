"""Static checks of the Slicer panel: the ``.ui`` file against the module file (no Qt needed).

* every ``self.ui.<name>`` the module file uses exists in the ``.ui`` with the class the
  code expects (the table below; a new binding must be added to it);
* every parameter-node field has exactly one widget with that ``SlicerParameterName``,
  of a class ``parameterNodeWrapper`` can connect to the field's type, and every
  ``SlicerParameterName`` in the ``.ui`` names a field;
* the module file imports nothing at top level that needs torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "RegC2P"
MODULE_FILE = MODULE_DIR / "RegC2P.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "RegC2P.ui"

# Widgets the Python code binds, with the class it relies on (properties/methods it calls).
EXPECTED_CLASSES = {
    "inputSelector": "qMRMLNodeComboBox",
    "outputSelector": "qMRMLNodeComboBox",
    "modelPathLineEdit": "ctkPathLineEdit",  # .currentPath, currentPathChanged(QString)
    "importModelButton": "QPushButton",
    "modelInfoLabel": "QLabel",
    "deviceComboBox": "QComboBox",  # .model().item(i), setItemData
    "deviceInfoLabel": "QLabel",
    "refineComboBox": "QComboBox",
    "windowSpinBox": "QSpinBox",
    "strideSpinBox": "QSpinBox",
    "opacitySliderWidget": "ctkSliderWidget",  # valueChanged(double)
    "petColorComboBox": "QComboBox",
    "suvMinSpinBox": "QDoubleSpinBox",
    "suvMaxSpinBox": "QDoubleSpinBox",
    "exportDicomButton": "QPushButton",
    "applyButton": "QPushButton",  # .text toggles Apply/Cancel
    "progressBar": "QProgressBar",  # .value in 0..1000
    "statusLabel": "QLabel",
}

# Widget classes Slicer's parameterNodeWrapper GUI connectors accept per field type (exact class match).
CONNECTABLE = {
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
    "pathlib.Path": {"ctkPathLineEdit"},
    "str-choice": {"QComboBox"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "bool": {"QCheckBox", "QPushButton"},
}


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    assert len(widgets) == len(list(root.iter("widget"))), "widget names in the .ui must be unique"
    return widgets


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _ui_names_used(tree: ast.Module) -> set[str]:
    """Names ``x`` in every ``self.ui.x`` expression."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def _parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Field name -> kind (a CONNECTABLE key) of the @parameterNodeWrapper class."""
    classes = [
        c
        for c in tree.body
        if isinstance(c, ast.ClassDef)
        and any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in c.decorator_list)
    ]
    assert len(classes) == 1, "exactly one @parameterNodeWrapper class"
    fields = {}
    for statement in classes[0].body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        text = ast.unparse(statement.annotation)
        if text.startswith("vtkMRML"):
            kind = "node"
        elif text.startswith("Annotated[str, Choice("):
            kind = "str-choice"
        elif text.startswith("Annotated["):
            kind = text[len("Annotated[") :].split(",")[0]
        else:
            kind = text
        fields[statement.target.id] = kind
    return fields


def _parameter_name(widget: ET.Element) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.findtext("string")
    return None


def test_every_bound_widget_exists_with_the_expected_class(module_tree, ui_widgets):
    used = _ui_names_used(module_tree)
    assert used, "the module binds no widgets?"
    undeclared = used - set(EXPECTED_CLASSES)
    assert not undeclared, f"self.ui names missing from EXPECTED_CLASSES: {sorted(undeclared)}"
    for name in sorted(used):
        assert name in ui_widgets, f"{name} is used by RegC2P.py but not in RegC2P.ui"
        assert ui_widgets[name].get("class") == EXPECTED_CLASSES[name], name


def test_every_parameter_node_field_has_one_connectable_widget(module_tree, ui_widgets):
    fields = _parameter_fields(module_tree)
    assert set(fields) >= {"inputVolume", "outputVolume", "modelFile", "device", "refine", "window", "stride", "opacity"}
    bound: dict[str, list[ET.Element]] = {}
    for widget in ui_widgets.values():
        name = _parameter_name(widget)
        if name is not None:
            bound.setdefault(name, []).append(widget)
    assert set(bound) <= set(fields), f"SlicerParameterName without a field: {sorted(set(bound) - set(fields))}"
    for field, kind in fields.items():
        assert field in bound, f"parameter {field} has no widget with SlicerParameterName={field}"
        assert len(bound[field]) == 1, f"parameter {field} is bound to several widgets"
        widget_class = bound[field][0].get("class")
        assert widget_class in CONNECTABLE[kind], f"{field} ({kind}) cannot be connected to a {widget_class}"


def test_node_selectors_offer_scalar_volumes_and_output_can_be_created(ui_widgets):
    def prop(widget, name):
        element = next((p for p in widget.findall("property") if p.get("name") == name), None)
        return None if element is None else "".join(element.itertext()).strip()

    for name in ("inputSelector", "outputSelector"):
        assert prop(ui_widgets[name], "nodeTypes") == "vtkMRMLScalarVolumeNode"
        assert prop(ui_widgets[name], "showChildNodeTypes") == "false"  # no label maps
    assert prop(ui_widgets["inputSelector"], "addEnabled") == "false"
    assert prop(ui_widgets["outputSelector"], "noneEnabled") == "true"
    assert prop(ui_widgets["outputSelector"], "noneDisplay") == "Create new volume"


def test_ui_top_widget_sections_and_scene_connections():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "RegC2P"
    sections = [w.get("name") for w in top.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    assert sections == ["inputsCollapsibleButton", "refinementCollapsibleButton", "outputsCollapsibleButton"]
    receivers = {
        c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    }
    assert receivers == {"inputSelector", "outputSelector"}
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used_custom = {w.get("class") for w in root.iter("widget") if not w.get("class").startswith("Q")}
    assert used_custom <= declared


def test_module_file_has_the_template_parts_and_no_heavy_top_level_imports(module_tree):
    classes = {c.name: [ast.unparse(b) for b in c.bases] for c in module_tree.body if isinstance(c, ast.ClassDef)}
    assert classes["RegC2P"] == ["ScriptedLoadableModule"]
    assert classes["RegC2PWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["RegC2PLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["RegC2PTest"] == ["ScriptedLoadableModuleTest"]
    top_imports = set()
    for statement in module_tree.body:
        if isinstance(statement, ast.Import):
            top_imports |= {a.name for a in statement.names}
        elif isinstance(statement, ast.ImportFrom):
            top_imports.add(statement.module)
    # The module must load before torch is installed: torch users are imported lazily.
    heavy = {m for m in top_imports if m and (m.startswith("torch") or m in ("RegC2PSlicer.processing", "RegC2PSlicer.models"))}
    assert not heavy, heavy
    assert (MODULE_DIR / "Resources" / "Icons" / "RegC2P.png").is_file()
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert 'self.resourcePath("UI/RegC2P.ui")' in text
    assert "10.54939/1859-1043.j.mst.102.2025.125-132" in text  # the paper is cited


def test_modules_the_module_file_imports_at_top_level_load_without_torch(module_tree, tmp_path):
    """Run a Python in which ``import torch`` fails and import the RegC2PLib/RegC2PSlicer
    modules the module file imports at top level (Slicer loads it before torch exists)."""
    ours = sorted(
        statement.module
        for statement in module_tree.body
        if isinstance(statement, ast.ImportFrom)
        and statement.module
        and statement.module.startswith(("RegC2PLib", "RegC2PSlicer"))
    )
    assert ours, "the module file imports no RegC2P package at top level (test needs updating)"
    (tmp_path / "torch.py").write_text("raise ImportError('torch is not installed (simulated)')\n")
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(MODULE_DIR)]), "PATH": os.defpath}
    done = subprocess.run([sys.executable, "-c", code, *ours], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr

"""The panel's "Export as DICOM series", headless (``slicer-core`` wheel): a synthetic PET
node made on a CT loaded from DICOM is written as a PET series in the CT's study, with
the node's SUV and the CT's geometry; a CT not from DICOM, files gone from the database,
or no PET yet are each refused with one line."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import STUDY_UID, write_ct

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.data.dicom_series import find_series, read_ct_series, read_series_image  # noqa: E402
from RegC2PLib.dicom_output import SUV_STEP  # noqa: E402
from RegC2PLib.errors import InputError  # noqa: E402
from RegC2PSlicer import output, volumes  # noqa: E402
from RegC2PSlicer.dicom_export import INSTANCE_UIDS, export_pet_dicom, new_folder  # noqa: E402

SHA = "ab" * 32


@pytest.fixture
def loaded(headless, tmp_path, make_ct, directions):
    """A CT written as DICOM and loaded as Slicer's DICOM module would (node + instance UIDs),
    its synthetic PET node, and the UID -> file lookup of the DICOM database."""
    image = make_ct((4, 12, 16), spacing=(0.9, 1.1, 2.5), direction=directions["OBLIQUE"], origin=(-3.0, 1.0, 10.0))
    files = write_ct(tmp_path / "dicom", image)
    series = read_ct_series(tmp_path / "dicom").series
    ct_node = volumes.add_volume_node(headless, read_series_image(series), "CT")
    ct_node.SetAttribute(INSTANCE_UIDS, " ".join(h.SOPInstanceUID for h in series.headers))
    suv = sitk.GetImageFromArray(np.linspace(0.0, 12.0, 4 * 12 * 16, dtype=np.float32).reshape(4, 12, 16))
    suv.CopyInformation(read_series_image(series))
    pet_node = output.store_pet(ct_node, suv, None, {"Model": "mine.safetensors", "ModelSHA256": SHA})
    database = {h.SOPInstanceUID: str(f) for h, f in zip(series.headers, series.files)}
    return ct_node, pet_node, suv, database, files


def test_the_pet_node_is_exported_into_the_ct_study(tmp_path, loaded, assert_same_geometry) -> None:
    ct_node, pet_node, suv, database, _ = loaded
    (tmp_path / "exports").mkdir()
    written = export_pet_dicom(pet_node, ct_node, tmp_path / "exports", database.get)
    assert written == tmp_path / "exports" / "CT synthetic PET"
    (series,) = find_series(written)
    assert {h.StudyInstanceUID for h in series.headers} == {STUDY_UID}
    assert SHA in series.headers[0].DerivationDescription and "mine.safetensors" in series.headers[0].DerivationDescription
    back = read_series_image(series)
    assert_same_geometry(back, suv, 1e-5)
    assert np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(suv)).max() <= SUV_STEP / 2 + 1e-5
    again = export_pet_dicom(pet_node, ct_node, tmp_path / "exports", database.get)  # never over an earlier export
    assert again.name == "CT synthetic PET (2)"


def test_exports_that_cannot_be_made_are_refused(headless, tmp_path, loaded, make_ct) -> None:
    ct_node, pet_node, _, database, files = loaded
    with pytest.raises(InputError, match="no synthetic PET to export yet; press Apply first"):
        export_pet_dicom(None, ct_node, tmp_path, database.get)
    with pytest.raises(InputError, match="no synthetic PET to export yet"):
        export_pet_dicom(ct_node, ct_node, tmp_path, database.get)  # a volume RegC2P did not make
    plain = volumes.add_volume_node(headless, make_ct((4, 12, 16)), "CT from NRRD")
    with pytest.raises(InputError, match="CT from NRRD was not loaded from DICOM, so there is no study"):
        export_pet_dicom(pet_node, plain, tmp_path, database.get)
    files[1].unlink()
    with pytest.raises(InputError, match=r"1 of the 4 DICOM files of CT are no longer in Slicer's DICOM database"):
        export_pet_dicom(pet_node, ct_node, tmp_path, database.get)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]


def test_folder_names_are_made_safe(tmp_path) -> None:
    assert new_folder(tmp_path, "CT: 1/2 synthetic PET") == tmp_path / "CT_ 1_2 synthetic PET"
    assert new_folder(tmp_path, "???") == tmp_path / "synthetic PET"
    with pytest.raises(InputError, match="is not a folder"):
        new_folder(tmp_path / "missing", "x")

"""Data: synthetic PET/CT phantoms, the study folder layout, splits and training samples.

* :mod:`.phantom` — ``PhantomConfig``, ``generate_case``, ``write_dataset`` (``regc2p phantom``);
  built from :mod:`.phantom_grid`, :mod:`.phantom_anatomy`, :mod:`.phantom_lesions`,
  :mod:`.pet_physics` and :mod:`.misalignment`.
* :mod:`.studies` — ``discover_studies``, ``load_study`` (CT in HU, PET in SUVbw on the CT grid),
  ``read_ct``, ``read_pet``.
* :mod:`.dicom_series` — ``find_series``, ``choose_series``, ``read_ct_series`` (DICOM trees with
  several series: the CT or the attenuation-corrected PET, geometry checked).
* :mod:`.dicom_suv` — ``read_pet_suv`` (SUVbw from PET DICOM headers: BQML, Philips CNTS, GML).
* :mod:`.split` — ``split_studies``, ``write_manifest``, ``read_manifest``, ``select``.
* :mod:`.samples` — ``SliceDataset``, ``WindowDataset``, ``NpySliceDataset``, ``loader_speed``.

Arrays are (z, y, x); images are SimpleITK (LPS); CT in HU, PET in SUVbw, float32.
Submodules are imported on use, so importing the package stays light.
"""

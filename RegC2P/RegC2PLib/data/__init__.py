"""Data: synthetic PET/CT phantoms, the study folder layout, splits and training samples.

* :mod:`.phantom` — ``PhantomConfig``, ``generate_case``, ``write_dataset`` (``regc2p phantom``);
  built from :mod:`.phantom_grid`, :mod:`.phantom_anatomy`, :mod:`.phantom_lesions`,
  :mod:`.pet_physics` and :mod:`.misalignment`.
* :mod:`.anatomy_phantom` — ``AnatomyPhantomConfig``, ``generate_anatomy_case``, ``AnatomyMaker``
  (``regc2p phantom --anatomy``): synthetic patients made from real CTs with organ labels;
  built from :mod:`.anatomy_source` (label folders), :mod:`.anatomy_roles`, :mod:`.random_warp`,
  :mod:`.ct_look` and :mod:`.anatomy_lesions`, with the PET physics and misalignment above.
* :mod:`.studies` — ``discover_studies``, ``load_study`` (CT in HU, PET in SUVbw on the CT grid),
  ``read_ct``, ``read_pet``.
* :mod:`.dicom_series` — ``find_series``, ``choose_series``, ``read_ct_series`` (DICOM trees with
  several series: the CT or the attenuation-corrected PET, geometry checked).
* :mod:`.dicom_suv` — ``read_pet_suv`` (SUVbw from PET DICOM headers: BQML, Philips CNTS, GML).
* :mod:`.split` — ``split_studies``, ``write_manifest``, ``read_manifest``, ``select``.
* :mod:`.cache` — ``prepare_studies`` (the training cache); :mod:`.datasets` — ``SliceDataset``, ``WindowDataset``;
  :mod:`.npy_layout` — ``NpySliceDataset``.

Arrays are (z, y, x); images are SimpleITK (LPS); CT in HU, PET in SUVbw, float32.
Submodules are imported on use, so importing the package stays light.
"""

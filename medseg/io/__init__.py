"""Reading scans with their geometry and writing masks that overlay them exactly."""

from medseg.io.dicom import SeriesInfo, list_series, read_dicom_series
from medseg.io.dicom_write import write_dicom_series
from medseg.io.geometry import affines_match, lps_to_ras, ras_to_lps
from medseg.io.nifti import save_mask, write_nifti
from medseg.io.reader import check_volume, load_volume
from medseg.io.volume import Volume

__all__ = [
    "SeriesInfo",
    "Volume",
    "affines_match",
    "check_volume",
    "list_series",
    "load_volume",
    "lps_to_ras",
    "ras_to_lps",
    "read_dicom_series",
    "save_mask",
    "write_dicom_series",
    "write_nifti",
]

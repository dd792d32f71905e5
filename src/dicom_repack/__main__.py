"""``python -m dicom_repack``: the same program as the ``dicom-repack`` console script."""

from dicom_repack.cli import run

run()

"""The green benchmark: ``dicom-repack bench`` and ``dicom-repack corpus``.

Kept free of imports: ``dicom_repack.cli`` imports the sub-modules only when their
sub-command is chosen.
"""

"""dicom-repack: file DICOM instances into a tag-named tree and write the pypx records.

Kept empty of imports on purpose: the per-instance door runs once per received
instance, and everything imported here is paid for on every one of them.
"""

__version__ = "0.1.0"

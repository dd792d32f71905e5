"""The doors onto the core: which instances reach the job, and how results are reported.

``instance`` is the per-instance door (``storescp -xcr``), ``batch`` the folders door.
The receiver (``dicom_repack.listen``) and the benchmark (``dicom_repack.bench``) are
packages of their own. Kept free of imports (the per-instance door's start-up).
"""

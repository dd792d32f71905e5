"""The receiver door: a DICOM Storage SCP that repacks in process.

``cli`` parses the flags and runs the server, ``scp`` serves associations,
``assoc`` negotiates them, ``wire`` reads and writes PDUs, ``series_watch`` runs
the series-completion hook. Kept free of imports so that ``dicom_repack.cli``
can load the door lazily.
"""

"""``dicom-repack watch``: file what a receiver writes into a folder, as it arrives."""

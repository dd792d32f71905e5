"""The core: one instance through the job, shared by every door.

``header`` reads the elements needed, ``layout`` turns them into a safe relative
path, ``place`` puts the file there atomically, ``records`` writes the pypx
records, ``repack`` runs those steps for one instance and returns an ``Outcome``.
Kept free of imports: the per-instance door pays for every module it loads.
"""

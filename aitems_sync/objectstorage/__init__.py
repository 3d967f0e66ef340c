"""NCP Object Storage (S3-compatible), for the first full load of a dataset (``bootstrap``).

boto3 is an optional dependency (``aitems-sync[objectstorage]``), imported only here and only
when a command needs Object Storage: ``run`` never starts it.
"""

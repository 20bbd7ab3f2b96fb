"""Dataset versioning: immutable versions of files and folders, tags, lineage."""

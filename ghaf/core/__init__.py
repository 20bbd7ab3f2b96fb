"""Settings, database, errors, ids, names and paging shared by every domain."""

"""The similarity store's format: layout, reading and writing, shards, markers, verification, the dataset card and API."""

"""The index on disk (manifest and memory-mapped features) and building it from a gallery."""

"""Search backends: where the gallery's vectors live and how their neighbours are found."""

"""`lookalike eval`: retrieval and verification quality, scored as the server would search."""

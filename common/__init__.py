"""Small stdlib-only helpers shared by the client, the server and export: durable
file writes, log set-up and token files. Imports no other lookalike package."""

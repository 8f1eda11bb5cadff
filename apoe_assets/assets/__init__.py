"""Assets: each loads its inputs, calls the pure core, returns the result with metadata."""

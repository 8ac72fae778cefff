"""The measurements behind every default; run from the repository root as `python -m benchmarks.<script>` (see README.md)."""

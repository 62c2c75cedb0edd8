"""Command-line tools behind the `tttkd` console script."""

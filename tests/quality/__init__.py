"""Code quality: mypy, ruff, the layering contract, the README's examples."""

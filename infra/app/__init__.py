"""The app on top: what a person touches (the CLI, the embedded stack supervisor, the demo, the web UI, the docs
generator).

It may import anything below it (ground, domain libraries, consumers); nothing below imports it.
The import contract in ``pyproject.toml`` (``[tool.importlinter]``, run by ``tests/test_code_quality.py``)
states the floors.
"""

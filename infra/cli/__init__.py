"""The ``modelbus`` command line."""

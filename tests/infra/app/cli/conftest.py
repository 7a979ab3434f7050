"""The dataset CLI's tests share the dataset manager's fixtures (``tests/producers/conftest.py``)."""

from tests.producers.conftest import csv_file, frame  # noqa: F401 - fixtures, found by pytest through this import

"""Dataset manager: validated, content-addressed, immutable dataset versions announced by DatasetCreated.

Public API (the SDK and CLI are thin layers over these)::

    push_dataset(data, spec, store=..., publisher=..., topic=...) -> PushResult
    DatasetSpec, Expectation, ArrayData
    ArtifactDatasetRegistry(store).get("churn@<version>") / .pull(...) / .read_pandas(...)
"""

from producers.datasets.push import PushResult, push_dataset
from producers.datasets.registry import ArtifactDatasetRegistry, DatasetRef, DatasetRegistry, DatasetVersion
from producers.datasets.report import Issue, ValidationReport
from producers.datasets.sources import ArrayData
from producers.datasets.spec import DatasetSpec, Expectation

__all__ = ["ArrayData", "ArtifactDatasetRegistry", "DatasetRef", "DatasetRegistry", "DatasetSpec", "DatasetVersion",
           "Expectation", "Issue", "PushResult", "ValidationReport", "push_dataset"]

"""Serving fixtures: the session's Triton, artifact store and ``publish_model`` live in tests/conftest.py
(the deployer's tests in tests/consumers share the same server); this file keeps serving-only state.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def deployed_churn(serving_settings, artifact_store, publish_model, model_client):
    """Model 'churn' version 1 deployed once for the read-only tests."""
    from serving.deploy import deploy

    result = deploy(publish_model("churn", 1), serving_settings, artifact_store, client=model_client)
    assert result.ok, result.reason
    return result

"""Serving on NVIDIA Triton: model repository, deployment, promotion gate, client, in-model telemetry."""

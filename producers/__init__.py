"""Producers: how data enters ModelBus (dataset manager, upstream SDK ``producers.sdk.ModelBus``, CLI)."""

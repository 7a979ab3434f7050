"""Avro event schemas of ModelBus and the codec that puts them on the wire.

``schemas/avro`` holds the current version of every event; ``schemas/history``
keeps each released version so readers can resolve old writers and a test can
prove every change stays backward- and forward-compatible.
"""

from schemas.catalog import EVENTS, Catalog, EventSchema, catalog
from schemas.codec import AvroCodec, Decoded, SerializationError

__all__ = ["EVENTS", "AvroCodec", "Catalog", "Decoded", "EventSchema", "SerializationError", "catalog"]

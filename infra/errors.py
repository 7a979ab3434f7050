"""Error tree of the platform plumbing.

Three cases are kept apart everywhere events are handled:

* ``SkipEvent``   – nothing to do (duplicate, not for us); commit and move on.
* ``PoisonEvent`` – this event can never succeed; send it to ``<topic>.dlq`` with
  error headers, commit, keep consuming.
* ``FatalError``  – the process cannot go on (lost broker credentials, full disk);
  stop without committing so the event is redelivered after the fix.

Any other exception from a handler is retried: without bound when the error's class says
``is_transient`` (a dependency is down for now: ``DeliveryError`` here, ``StorageUnavailable``,
``ClickHouseUnavailable``, ``serving.errors.ServerUnavailable``), else up to the runtime's
``max_attempts`` and then dead-lettered. ``infra/kafka/outcome.py`` is that policy, in one place.
"""

from __future__ import annotations


class ModelBusError(Exception):
    """Base of every expected ModelBus error; its message is shown to the user as is."""


class ConfigError(ModelBusError):
    """Settings or environment are wrong (port taken, binary missing, bad URL)."""


class StackError(ModelBusError):
    """A part of the embedded stack failed to start, stop or answer."""


class SkipEvent(ModelBusError):
    """The event needs no work (already processed, not addressed to this consumer)."""


class PoisonEvent(ModelBusError):
    """The event can never be processed; it goes to the dead-letter topic with this message."""


class FatalError(ModelBusError):
    """The consumer must stop; the current event is not committed."""


class DeliveryError(ModelBusError):
    """The broker did not acknowledge one or more produced events."""

    is_transient = True


class EventTooLarge(ModelBusError):
    """An event is over the Kafka record size limit (kafka.max_message_bytes); it is never queued."""

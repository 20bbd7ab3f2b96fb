"""What ``/metrics`` exports besides the request series (ghaf/server/middleware.py).

Everything lives on the app's own :class:`~prometheus_client.CollectorRegistry`:

- the process, garbage-collector and Python platform collectors of ``prometheus_client``
  (``process_*``, ``python_gc_*``, ``python_info``);
- ``ghaf_build_info{version}``;
- the database connection pool (``ghaf_db_pool_*``), read from the engine at scrape time;
- the security cache's hits, misses and invalidations (``ghaf_security_cache_*``);
- the domain counters the services keep (ghaf/core/metrics.py);
- what each of the runtime's backends exports, where it has a ``collect`` (the
  deployments' gateway: ghaf/deployments/traffic.py).

Collectors read their numbers when scraped, so nothing here runs on a request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ghaf.core import metrics as domain
from ghaf.core.database import Database
from ghaf.platform.metrics import process_registry
from ghaf.runtime import Runtime
from ghaf.security.cache import SecurityCache

__all__ = [
    "BackendsCollector",
    "CacheCollector",
    "DomainCollector",
    "PoolCollector",
    "app_registry",
]


def app_registry(runtime: Runtime) -> CollectorRegistry:
    """A registry with every collector above, for one app serving ``runtime``.

    The custom collectors have no ``describe``: the registry then never calls
    ``collect`` outside a scrape (not even at registration)."""
    registry = process_registry()
    registry.register(PoolCollector(runtime.database))
    registry.register(CacheCollector(runtime.cache))
    registry.register(DomainCollector())
    registry.register(BackendsCollector(runtime))
    return registry


class BackendsCollector:
    """The series of every backend a domain keeps in ``runtime.backends`` that has a
    ``collect()`` (read at scrape time: backends come and go with the lifespan)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        for backend in list(self.runtime.backends.values()):
            collect = getattr(backend, "collect", None)
            if callable(collect):
                yield from collect()


class PoolCollector:
    """The SQLAlchemy engine pool of one database: its configured size and overflow
    limit, and the connections checked out, idle and opened beyond the size.

    PostgreSQL and SQLite files both use a ``QueuePool`` (sized by
    ``GHAF_DATABASE_POOL_SIZE``/``GHAF_DATABASE_MAX_OVERFLOW`` on PostgreSQL, SQLAlchemy's
    defaults on SQLite). On SQLite each thread also holds one connection of the pool for
    the per-request epoch check (``Database.peek``), so ``checked_out`` counts those too.
    A pool without these numbers (``NullPool``, ``StaticPool``) exports nothing.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        pool = self.database.engine.pool
        reads = {
            "size": getattr(pool, "size", None),
            "checked_out": getattr(pool, "checkedout", None),
            "checked_in": getattr(pool, "checkedin", None),
            "overflow": getattr(pool, "overflow", None),
        }
        if any(read is None for read in reads.values()):
            return
        dialect = self.database.engine.dialect.name
        values = {name: float(read()) for name, read in reads.items()}  # type: ignore[misc]
        # QueuePool counts overflow from -size up; past zero it is connections beyond size.
        values["overflow"] = max(values["overflow"], 0.0)
        values["max_overflow"] = float(getattr(pool, "_max_overflow", 0))
        docs = {
            "size": "Connections the pool keeps (its configured size).",
            "max_overflow": "Connections the pool may open beyond its size.",
            "checked_out": "Connections in use by requests and tasks now.",
            "checked_in": "Idle connections in the pool now.",
            "overflow": "Connections open beyond the pool's size now.",
        }
        for name, doc in docs.items():
            family = GaugeMetricFamily(f"ghaf_db_pool_{name}", doc, labels=["dialect"])
            family.add_metric([dialect], values[name])
            yield family


class CacheCollector:
    """Hits and misses of the security cache (ghaf/security/cache.py) by kind (token,
    grant, view), and how often a security-relevant change emptied it. A low hit rate
    with many invalidations means the audited state changes faster than reads reuse it."""

    def __init__(self, cache: SecurityCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        tallies, invalidations = self.cache.stats()
        hits = CounterMetricFamily(
            "ghaf_security_cache_hits",
            "Read-path lookups answered from the security cache, by kind.",
            labels=["kind"],
        )
        misses = CounterMetricFamily(
            "ghaf_security_cache_misses",
            "Read-path lookups the security cache could not answer (then read from the "
            "database), by kind.",
            labels=["kind"],
        )
        for kind, (hit, miss) in tallies.items():
            hits.add_metric([kind], hit)
            misses.add_metric([kind], miss)
        yield hits
        yield misses
        yield CounterMetricFamily(
            "ghaf_security_cache_invalidations",
            "Times a newer audit epoch (a security-relevant change) emptied the cache.",
            value=invalidations,
        )


class DomainCollector:
    """The counters the services keep (ghaf/core/metrics.py), as counter families."""

    def collect(self) -> Iterator[Metric]:
        for counter in domain.COUNTERS:
            labels = [counter.label] if counter.label else []
            family = CounterMetricFamily(counter.name, counter.documentation, labels=labels)
            for value, count in counter.samples():
                family.add_metric([value] if counter.label else [], count)
            yield family

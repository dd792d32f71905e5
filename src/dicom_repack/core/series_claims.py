"""Series across receivers: what the shared index says of one series, and its claim.

Several receivers (listen, watch; one host or many) file one series into one index;
none of them alone can say it is complete. The series watch (listen/series_watch.py)
asks the index (:data:`SERIES_NOW`, :data:`SERIES_HOSTS`: a :class:`SeriesNow`) and
claims each round of a series (:data:`CLAIM`) so that one receiver of the cluster
notifies it. Plain SQL with ``?`` placeholders, run by either backend
(core/index.py's SQLite, core/index_pg.py's PostgreSQL).
"""

from __future__ import annotations

__all__ = ["CLAIM", "SERIES_HOSTS", "SERIES_NOW", "SeriesNow"]

#: A series-complete claim (listen/series_watch.py): the first claimant of a series
#: inserts its row; a later one wins only where the series has grown since (a new round
#: of arrivals), so each round of a series is notified by one receiver of the cluster.
#: Whoever's statement changed a row (rowcount 1) won. Plain SQL: SQLite and PostgreSQL.
CLAIM = (
    "INSERT INTO series_claims (series_instance_uid, claimed_at, host, instances, hosts, state) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series_instance_uid) DO UPDATE SET "
    "claimed_at = excluded.claimed_at, host = excluded.host, instances = excluded.instances, "
    "hosts = excluded.hosts, state = excluded.state "
    "WHERE excluded.instances > series_claims.instances"
)

#: one series, cluster-wide: instances, the last arrival, the announced size
SERIES_NOW = (
    "SELECT count(*), max(filed_at), max(expected) FROM instances "
    "WHERE study_instance_uid = ? AND series_instance_uid = ?"
)

#: one series' instances per filing host (NULL: filed before hosts were recorded)
SERIES_HOSTS = (
    "SELECT host, count(*) FROM instances "
    "WHERE study_instance_uid = ? AND series_instance_uid = ? GROUP BY host ORDER BY host"
)


class SeriesNow:
    """One series as the shared index sees it (:meth:`.index.Index.series_now`, :meth:`.index_pg.PgIndex.series_now`).

    ``last``: the last arrival (max ``filed_at``, wall-clock seconds), on whichever
    host; ``expected``: the announced size (None where no instance carries it);
    ``hosts``: host identity -> instances it filed ("" for rows without one).
    """

    __slots__ = ("expected", "hosts", "instances", "last")

    def __init__(
        self, instances: int, last: float | None, expected: int | None, hosts: dict[str, int]
    ) -> None:
        self.instances = instances
        self.last = last
        self.expected = expected
        self.hosts = hosts

    @property
    def state(self) -> str:
        """``complete`` unless fewer instances arrived than announced (``incomplete``);
        whether the series is quiet is the caller's to judge, from ``last``."""
        if self.expected and self.instances < self.expected:
            return "incomplete"
        return "complete"

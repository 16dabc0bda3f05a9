"""The live event store and decision log: SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL.

Every acknowledged write is committed before the call returns. Workers share nothing but this database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from features import schema

META = sa.MetaData()
EVENTS = sa.Table(
    "events", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("product_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False, index=True),
    sa.Column("session_id", sa.String(64)),
    sa.Column("channel", sa.String(32)),
    sa.Column("quantity", sa.Float),
    sa.Column("unit_price", sa.Float),
    sa.Column("received_at", sa.DateTime, nullable=False),
)
DECISIONS = sa.Table(
    "decisions", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("offer_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("group", sa.String(16), nullable=False),
    sa.Column("campaign_id", sa.String(64)),
    sa.Column("expected_value", sa.Float),
    sa.Column("propensity", sa.Float),
    sa.Column("model_version", sa.String(64)),
    sa.Column("decided_at", sa.DateTime, nullable=False, index=True),
    sa.Column("decision_id", sa.String(40)),
)
ORDER_LINES = sa.Table(
    "order_lines", META,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("line_id", sa.String(64), nullable=False, unique=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("product_id", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Float, nullable=False),
    sa.Column("unit_price", sa.Float, nullable=False),
    sa.Column("discount", sa.Float, nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False, index=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
)
"""Live order lines (returns have negative quantities); a line id is stored once."""
CUSTOMER_STATE = sa.Table(
    "customer_state", META,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("base_as_of", sa.DateTime, nullable=False),
    sa.Column("n_orders", sa.Integer, nullable=False),
    sa.Column("order_value_total", sa.Float, nullable=False),
    sa.Column("net_spend", sa.Float, nullable=False),
    sa.Column("last_purchase", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
"""Running order state per customer: the state of the training that ended at ``base_as_of``, moved on by
the live orders since."""
TRIGGERS = sa.Table(
    "triggers", META,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trigger_id", sa.String(160), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("order_id", sa.String(64)),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("detail", sa.String(300), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("decided", sa.Boolean, nullable=False, default=False),
    sa.Column("offer_id", sa.String(64)),
    sa.Column("decision_reason", sa.String(300)),
    sa.Column("control_group", sa.Boolean),
    sa.Column("expected_value", sa.Float),
    sa.Column("decision_id", sa.String(600)),
)
"""Triggers as the CRM feed serves them, in ``seq`` order; a trigger id fires once."""
WEBHOOKS = sa.Table(
    "webhook_deliveries", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trigger_id", sa.String(160), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("status", sa.String(12), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime, nullable=False, index=True),
    sa.Column("lease_until", sa.DateTime),
    sa.Column("lease_owner", sa.String(80)),
    sa.Column("last_error", sa.String(500)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("delivered_at", sa.DateTime),
    sa.UniqueConstraint("trigger_id", "url", name="uq_webhook_trigger_url"),
)
"""The webhook outbox: one row per trigger and URL, written in the trigger's own transaction; senders claim
rows (a lease), post them, and mark them ``delivered`` or, after the last attempt, ``dead`` (the
dead-letter record, with the last error)."""
CHURN_BANDS = sa.Table(
    "churn_bands", META,
    sa.Column(schema.CUSTOMER_ID, sa.String(64), primary_key=True),
    sa.Column("band", sa.String(16), nullable=False),
    sa.Column(schema.SCORE, sa.Float),
    sa.Column("as_of", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
"""Each customer's churn band as the last trigger scan saw it (a rise into ``high`` fires churn_risk)."""
COMMIT_LOCKS = sa.Table(
    "commit_locks", META,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("taken_at", sa.DateTime),
)
"""One row per lock that every process sharing the store takes by updating it (see
:meth:`LiveStore.offer_commits`): a row lock on PostgreSQL, the database's write lock on SQLite."""
BUSY_TIMEOUT_MS = 5000
"""How long a SQLite write waits for another's lock before ``database is locked``."""
OFFER_LOCK_WAIT_MS = 30_000
"""How long an offer commit waits for the offer-commit lock (commits queue for it; a replica stuck holding
it fails the others' commits after this, rather than hanging them)."""
OFFER_COMMITS = "offer_commits"
"""The lock held while an offer decision is taken and recorded (caps, budgets and cooldowns read and spent
at once)."""
DECISION_ID_INDEX = sa.Index("ix_decisions_decision_id", DECISIONS.c.decision_id, unique=True)
"""A decision is recorded once: committing the same decision id twice fails here, in every process."""
UNDECIDED_INDEX = sa.Index("ix_triggers_undecided", TRIGGERS.c.seq,
                           sqlite_where=TRIGGERS.c.decided.is_(False),
                           postgresql_where=TRIGGERS.c.decided.is_(False))
"""The triggers still waiting for their decision (a partial index: only those rows): every replica looks for
late ones every second, which without it reads the whole trigger history."""


def engine_url(url: str) -> str:
    """``url`` with the driver this project installs: ``postgresql://`` and ``postgres://`` mean psycopg 3
    (SQLAlchemy would otherwise look for psycopg2, which is not a dependency)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


SCHEMA_LOCK = 0x5E_7A_11_0E
"""PostgreSQL advisory lock held while a replica creates or migrates the schema (replicas start together)."""


def default_url(data_dir: str | Path) -> str:
    p = Path(data_dir) / "live.db"
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p.resolve()}"


_LAST_ID = sa.select(sa.func.max(EVENTS.c.id))
_NEW_CUSTOMERS = (sa.select(EVENTS.c.customer_id).where(EVENTS.c.id > sa.bindparam("after"),
                                                         EVENTS.c.id <= sa.bindparam("last"),
                                                         EVENTS.c.ts >= sa.bindparam("since"))
                  .group_by(EVENTS.c.customer_id))


class LiveStore:
    """Durable storage of live events and offer decisions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(engine_url(url), future=True, pool_pre_ping=True)
        self.postgres = self.engine.dialect.name == "postgresql"
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _: Any) -> None:
                cur = conn.cursor()
                cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: switching to WAL waits too
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.close()
        self._create_or_migrate()

    def _create_or_migrate(self) -> None:
        """Create the tables that are missing and migrate older ones, in one transaction; on PostgreSQL under
        an advisory lock, so replicas starting at once do not race. SQLite's driver starts the transaction
        only at the first write, after the check for existing tables: a store that lost that race to another
        process sees "already exists" and checks again; one that read before the other's write cannot upgrade
        its snapshot ("database is locked", not waited on by SQLite) and starts again."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    if self.postgres:
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
                    META.create_all(conn)
                    self._migrate(conn)
                    ins = postgresql.insert if self.postgres else sqlite.insert
                    conn.execute(ins(COMMIT_LOCKS).values(name=OFFER_COMMITS).on_conflict_do_nothing())
                return
            except sa.exc.OperationalError as e:
                lost_race = "already exists" in str(e) or "database is locked" in str(e)
                if self.postgres or not lost_race or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    @staticmethod
    def _migrate(conn: sa.Connection) -> None:
        """Stores made before decisions had ids get the column and its unique index; stores made before the
        index of undecided triggers get it."""
        cols = {c["name"] for c in sa.inspect(conn).get_columns("decisions")}
        if "decision_id" not in cols:
            conn.execute(sa.text("ALTER TABLE decisions ADD COLUMN decision_id VARCHAR(40)"))
        DECISION_ID_INDEX.create(conn, checkfirst=True)
        UNDECIDED_INDEX.create(conn, checkfirst=True)

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def add_events(self, events: list[dict[str, Any]]) -> int:
        if not events:
            return 0
        now = self._now()
        rows = [{"customer_id": e["customer_id"], "product_id": e["product_id"],
                 "event_type": e["event_type"], "ts": (e.get("ts") or now), "session_id": e.get("session_id"),
                 "channel": e.get("channel"), "quantity": e.get("quantity"),
                 "unit_price": e.get("unit_price"), "received_at": now}
                for e in events]
        with self.engine.begin() as conn:
            conn.execute(EVENTS.insert(), rows)
        return len(rows)

    def recent_events(self, customer_id: str, since: dt.datetime, limit: int = 200) -> list[tuple[str, str]]:
        q = (sa.select(EVENTS.c.product_id, EVENTS.c.event_type)
             .where(EVENTS.c.customer_id == customer_id, EVENTS.c.ts >= since)
             .order_by(EVENTS.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    def customers_with_events(self, since: dt.datetime, after_id: int = 0, conn: sa.Connection | None = None
                              ) -> tuple[set[str], int]:
        """Customers with events at or after ``since`` among the rows after ``after_id``, and the last row id
        read (pass it back next time to read only what is new). ``conn``: a connection the caller keeps open
        for repeated polls (its transaction is ended here, so each poll sees the latest writes)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.customers_with_events(since, after_id, own)
        try:
            last = conn.execute(_LAST_ID).scalar_one() or 0
            rows = [] if last <= after_id else conn.execute(
                _NEW_CUSTOMERS, {"after": after_id, "last": last, "since": since}).all()
        finally:
            conn.rollback()
        return {r[0] for r in rows}, int(max(last, after_id))

    @contextlib.contextmanager
    def offer_commits(self) -> Iterator[sa.Connection]:
        """A transaction holding the offer-commit lock of every process that shares this store (replicas
        included) until it ends: read the decision log (caps, cooldowns, what is left of budgets and volumes)
        and record the sends through the connection it yields, and no other commit can read or spend in
        between. The lock is :data:`COMMIT_LOCKS`' row, updated first: PostgreSQL holds its row lock until
        commit (READ COMMITTED: every read after it sees what the previous holder committed), SQLite takes
        its write lock before the transaction reads anything. Either waits for the lock up to
        :data:`OFFER_LOCK_WAIT_MS` (then an ``OperationalError``: lock timeout, or database is locked)."""
        take = COMMIT_LOCKS.update().where(COMMIT_LOCKS.c.name == OFFER_COMMITS).values(taken_at=self._now())
        with self.engine.begin() as conn:
            if self.postgres:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {OFFER_LOCK_WAIT_MS}")  # this transaction
                conn.execute(take)
            else:  # commits queue for this lock: wait longer than other writes do (set back once taken)
                conn.exec_driver_sql(f"PRAGMA busy_timeout={OFFER_LOCK_WAIT_MS}")
                try:
                    conn.execute(take)
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            yield conn

    @contextlib.contextmanager
    def _reading(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """``conn`` (the caller's transaction), else a connection of its own."""
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as own:
            yield own

    def add_decisions(self, decisions: list[dict[str, Any]], conn: sa.Connection | None = None) -> None:
        """Record decisions (sends and control-group holds) in one transaction (``conn``'s, e.g. from
        :meth:`offer_commits`, else one of its own). A ``decision_id`` already recorded raises
        ``sqlalchemy.exc.IntegrityError`` and records none of them."""
        if not decisions:
            return
        now = self._now()
        rows = [{"decision_id": None, **d, "decided_at": now} for d in decisions]
        if conn is not None:
            conn.execute(DECISIONS.insert(), rows)
            return
        with self.engine.begin() as own:
            own.execute(DECISIONS.insert(), rows)

    def recorded(self, decision_ids: list[str], conn: sa.Connection | None = None) -> set[str]:
        """Which of ``decision_ids`` are recorded already."""
        if not decision_ids:
            return set()
        q = sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.decision_id.in_(decision_ids))
        with self._reading(conn) as cn:
            return {r[0] for r in cn.execute(q)}

    def decisions(self, since: dt.datetime | None = None, customer_ids: list[str] | None = None,
                  conn: sa.Connection | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.decision_rows(since, customer_ids, conn), columns=DECISION_COLUMNS)

    def decision_rows(self, since: dt.datetime | None = None, customer_ids: list[str] | None = None,
                      conn: sa.Connection | None = None) -> list[Any]:
        """:meth:`decisions` as row mappings, without building a frame (an offer preview usually finds none:
        the empty frame cost more than the query)."""
        params: dict[str, Any] = {}
        if since is not None:
            params["since"] = since
        if customer_ids is not None:
            params["ids"] = customer_ids
        with self._reading(conn) as cn:
            return list(cn.execute(_DECISIONS_SINCE[(since is not None, customer_ids is not None)],
                                   params).mappings().all())

    def offer_sends(self, offer_ids: list[str], conn: sa.Connection | None = None) -> pd.DataFrame:
        """How many decisions sent each of ``offer_ids`` to a treatment group, per channel (offer_id, channel,
        n): what a capped offer's total budget and volume have used."""
        q = (sa.select(DECISIONS.c.offer_id, DECISIONS.c.channel, sa.func.count().label("n"))
             .where(DECISIONS.c.offer_id.in_(offer_ids), DECISIONS.c.group == "treatment")
             .group_by(DECISIONS.c.offer_id, DECISIONS.c.channel))
        with self._reading(conn) as cn:
            return pd.DataFrame(cn.execute(q).all(), columns=["offer_id", "channel", "n"])

    def events(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(sa.select(EVENTS)).mappings().all(),
                                columns=[c.name for c in EVENTS.columns])

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar_one())


DECISION_COLUMNS = [c.name for c in DECISIONS.columns]
"""The columns of :meth:`LiveStore.decisions`' frame (the decisions table's)."""


def _decisions_query(since: bool, ids: bool) -> sa.Select[Any]:
    q = sa.select(DECISIONS)
    if since:
        q = q.where(DECISIONS.c.decided_at >= sa.bindparam("since", type_=DECISIONS.c.decided_at.type))
    if ids:
        q = q.where(DECISIONS.c.customer_id.in_(sa.bindparam("ids", expanding=True)))
    return q


_DECISIONS_SINCE = {(a, b): _decisions_query(a, b) for a in (False, True) for b in (False, True)}
"""The decisions queries, built once (building one cost about as much as running it)."""


def merge_live(shop: Any, store: LiveStore, known_offers: set[str] | None = None) -> Any:
    """The shop with live behaviour events and offer decisions from the store appended.

    Live ``purchase`` events are skipped (orders come from the shop's own order system); decisions become
    offer_log rows (sent_at = decided_at) so caps, cooldowns and uplift measurement see them.
    """
    import dataclasses

    ev = store.events()
    ev = ev[ev["event_type"].isin(["view", "add_to_cart", "remove_from_cart", "wishlist"])]
    dec = store.decisions()
    if known_offers is not None:
        dec = dec[dec["offer_id"].isin(known_offers)]
    events, olog = shop.events, shop.offer_log
    if len(ev):
        live = ev[["customer_id", "product_id", "event_type", "ts", "session_id", "channel"]].astype(
            {"customer_id": object, "product_id": object})
        live = live[live["product_id"].isin(shop.products["product_id"])]
        events = live if events is None else pd.concat([events, live], ignore_index=True)
    if len(dec):
        rows = pd.DataFrame({"customer_id": dec["customer_id"], "offer_id": dec["offer_id"],
                             "sent_at": dec["decided_at"], "channel": dec["channel"], "group": dec["group"],
                             "redeemed_at": pd.NaT, "order_id": None, "propensity": dec["propensity"],
                             "campaign_id": dec["campaign_id"]})
        olog = rows if olog is None else pd.concat([olog, rows], ignore_index=True)
    return dataclasses.replace(shop, events=events, offer_log=olog,
                               fingerprint=f"{shop.fingerprint}+live{len(ev)}.{len(dec)}")

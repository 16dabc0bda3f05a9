"""The watcher's in-memory live events equal what the store gives (``LiveStore.recent_events``): for events
this process stored (read from the store until a poll has read them) and for events another writer stored
(in memory within a poll)."""

from __future__ import annotations

import datetime as dt
import time

from features.live import LiveStore
from serving.live_watcher import KEEP, LiveWatcher

AS_OF = dt.datetime(2025, 1, 1)


def wait_for(cond, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_recent_events_from_memory_equal_the_store(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    store, other = LiveStore(url), LiveStore(url)  # `other`: another process writing to the same store
    old = AS_OF - dt.timedelta(days=1)
    store.add_events([{"customer_id": "A", "product_id": "P0", "event_type": "view", "ts": old}])
    w = LiveWatcher(store, lambda: AS_OF, poll_seconds=0.05)
    try:
        assert w.recent("A", AS_OF) == [] and not w.has_live("A", AS_OF)  # before the models' data end
        events = [{"customer_id": "A", "product_id": f"P{i}",
                   "event_type": "view" if i % 2 else "add_to_cart", "ts": AS_OF + dt.timedelta(minutes=i)}
                  for i in range(5)]
        store.add_events(events)
        w.note(["A"])
        got = w.recent("A", AS_OF)
        assert got is None or got == store.recent_events("A", AS_OF)  # None: read the store instead
        wait_for(lambda: w.recent("A", AS_OF) is not None)  # a poll has read them
        assert w.recent("A", AS_OF) == store.recent_events("A", AS_OF)
        version, events = w.recent_versioned("A", AS_OF)
        assert events == w.recent("A", AS_OF) and version > 0 and w.recent_versioned("Z", AS_OF) == (0, [])
        other.add_events([{"customer_id": "Z", "product_id": "P9", "event_type": "view", "ts": AS_OF}])
        wait_for(lambda: w.has_live("Z", AS_OF))
        assert w.recent_versioned("A", AS_OF) == (version, events)  # A's events did not change
        other.add_events([{"customer_id": "A", "product_id": "P9", "event_type": "view",
                           "ts": AS_OF + dt.timedelta(hours=1)}])
        wait_for(lambda: w.recent_versioned("A", AS_OF)[0] != version)  # they did: a new version
        assert w.recent_versioned("A", AS_OF)[1][0] == ("P9", "view")
        assert w.recent("A", AS_OF)[1] == ("P4", "add_to_cart")  # newest first (after P9)
        other.add_events([{"customer_id": "B", "product_id": f"Q{i}", "event_type": "view",
                           "ts": AS_OF + dt.timedelta(seconds=i)} for i in range(KEEP + 30)])
        wait_for(lambda: w.has_live("B", AS_OF))
        assert w.recent("B", AS_OF) == store.recent_events("B", AS_OF)  # the newest KEEP
        assert len(w.recent("B", AS_OF)) == KEEP
        later = AS_OF + dt.timedelta(days=2)  # new models: only what happened since their data end
        assert w.recent("A", later) == store.recent_events("A", later) == []
    finally:
        w.close()
        assert not w.running
        store.engine.dispose()
        other.engine.dispose()

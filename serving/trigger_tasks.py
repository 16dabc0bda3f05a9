"""The service's background trigger work: the scheduled scan and the webhook sender, started and stopped
together (see :mod:`serving.trigger_scan` and :mod:`serving.webhooks`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from serving.orders import OrderBook
from serving.trigger_config import LiveConfig
from serving.trigger_scan import ScanLoop
from serving.webhooks import WebhookSender

if TYPE_CHECKING:
    from serving.runtime import Loaded


class TriggerTasks:
    """A scan every ``triggers.scan_interval_seconds`` (none when 0) and, when ``webhooks.urls`` is set, a
    sender that the order book wakes whenever triggers fire."""

    def __init__(self, book: OrderBook, current: Callable[[], Loaded | None], config: LiveConfig) -> None:
        interval = config.triggers.scan_interval_seconds
        self.scan = ScanLoop(book, current, interval) if interval > 0 else None
        self.sender: WebhookSender | None = None
        if config.webhooks.urls:
            self.sender = WebhookSender(book.store, config.webhooks, config.secret,
                                        before_claim=lambda: book.decide_late(current())).start()
            book.on_fired.append(self.sender.wake)

    def close(self) -> None:
        if self.scan is not None:
            self.scan.close()
        if self.sender is not None:
            self.sender.close()

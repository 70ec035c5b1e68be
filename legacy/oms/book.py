"""The OMS's order book: the orders received and their statuses, journalled to a JSON-lines
file, and the change feed of those statuses (with its simulated faults)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RECEIVED_FILE = "received.jsonl"

JsonObject = dict[str, object]


@dataclass(slots=True)
class Received:
    number: str
    external_id: str
    received_at: str
    order: JsonObject
    submissions: int = 1
    status: str = "RECEIVED"
    goods_issue: JsonObject | None = None

    def acknowledgement(self) -> JsonObject:
        return {
            "omsOrderNo": self.number,
            "externalOrderId": self.external_id,
            "status": self.status,
            "receivedAt": self.received_at,
        }

    def to_json(self) -> JsonObject:
        return {
            **self.acknowledgement(),
            "submissions": self.submissions,
            "order": self.order,
            "goodsIssue": self.goods_issue,
        }

    def goods_issue_lines(self) -> list[JsonObject]:
        """What leaves where when the order ships: each line's units out of its ship node."""
        lines = self.order["orderLines"]
        assert isinstance(lines, list)
        return [
            {"shipNode": line["shipNode"], "itemNo": line["itemNo"], "qty": line["qty"]}
            for line in lines
        ]


class OrderBook:
    """The orders received, in order, kept in memory and journalled to a JSON-lines file, and
    the change feed of their statuses (``feed[n - 1]`` is change number ``n``)."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal
        self.orders: dict[str, Received] = {}
        self.feed: list[JsonObject] = []
        if journal.is_file():
            self._replay(journal.read_text(encoding="utf-8"))

    def _replay(self, text: str) -> None:
        complete, _, torn = text.rpartition("\n")
        if torn:
            # A crash cut the last append short; its client never got an answer. Drop it, so
            # the next append starts on a line of its own.
            with self._journal.open("r+", encoding="utf-8") as journal:
                journal.truncate(len(complete.encode()) + 1 if complete else 0)
        for line in complete.splitlines():
            self._apply(json.loads(line))

    def _apply(self, event: JsonObject) -> None:
        if event["event"] == "received":
            order = event["order"]
            assert isinstance(order, dict)
            external_id = str(order["externalOrderId"])
            number, at = str(event["omsOrderNo"]), str(event["receivedAt"])
            self.orders[external_id] = received = Received(number, external_id, at, order)
            self._record(received, at)
        elif event["event"] == "resubmitted":
            self.orders[str(event["externalOrderId"])].submissions += 1
        else:
            received = self.orders[str(event["externalOrderId"])]
            received.status = "SHIPPED" if event["event"] == "shipped" else "CANCELLED"
            goods_issue = event.get("goodsIssue")
            received.goods_issue = goods_issue if isinstance(goods_issue, dict) else None
            self._record(received, str(event["at"]))

    def _record(self, received: Received, at: str) -> None:
        self.feed.append(
            {
                "seq": len(self.feed) + 1,
                "omsOrderNo": received.number,
                "externalOrderId": received.external_id,
                "status": received.status,
                "changedAt": at,
                "goodsIssue": received.goods_issue,
            }
        )

    def submit(self, order: JsonObject) -> tuple[int, Received]:
        """Store a validated order, or count a repeat of a known one. Returns the HTTP status
        (201 new, 200 repeat) and the record."""
        external_id = str(order["externalOrderId"])
        known = self.orders.get(external_id)
        now = timestamp(datetime.now(UTC))
        if known is not None:
            self._append({"event": "resubmitted", "externalOrderId": external_id, "at": now})
            known.submissions += 1
            return 200, known
        received = Received(f"OMS-{len(self.orders) + 1:07d}", external_id, now, order)
        event = {"event": "received", "omsOrderNo": received.number, "receivedAt": now}
        self._append({**event, "order": order})
        self.orders[external_id] = received
        self._record(received, now)
        return 201, received

    def ship(self, received: Received, goods_issue: JsonObject) -> None:
        """Record that ``received`` shipped, its goods issue posted as ``goods_issue``."""
        self._change(received, "shipped", {"goodsIssue": goods_issue})

    def cancel(self, received: Received) -> None:
        self._change(received, "cancelled", {})

    def _change(self, received: Received, event: str, details: JsonObject) -> None:
        now = timestamp(datetime.now(UTC))
        change = {"event": event, "externalOrderId": received.external_id, "at": now, **details}
        self._append(change)
        self._apply(change)

    def changes_after(self, since: int, limit: int) -> list[JsonObject]:
        # Numbers are 1-based and contiguous, so change n is feed[n - 1].
        return self.feed[since : since + limit]

    def _append(self, event: JsonObject) -> None:
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        with self._journal.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(event, separators=(",", ":")) + "\n")


def timestamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class FeedFaults:
    """The change feed's simulated faults (see ``legacy.oms``)."""

    holding: set[str] = field(default_factory=set)  # orders whose next change is held back
    held: set[int] = field(default_factory=set)  # change numbers held back
    garble: int = 0

    def noticed(self, book: OrderBook) -> None:
        """Hold the change just appended if its order was named."""
        change = book.feed[-1]
        if change["externalOrderId"] in self.holding:
            self.holding.discard(str(change["externalOrderId"]))
            self.held.add(int(str(change["seq"])))

    def update(self, body: JsonObject) -> None:
        hold, garble = body.get("hold", []), body.get("garble", 0)
        if not isinstance(hold, list) or isinstance(garble, bool) or not isinstance(garble, int):
            raise ValueError('expected {"hold": [order ids]}, {"release": true}, {"garble": n}')
        self.holding.update(str(order_id) for order_id in hold)
        self.garble = max(garble, 0) or self.garble
        if body.get("release") is True:
            self.held.clear()
            self.holding.clear()

    def reset(self) -> None:
        self.holding.clear()
        self.held.clear()
        self.garble = 0

    def shown(self, changes: list[JsonObject]) -> list[JsonObject]:
        visible = [change for change in changes if change["seq"] not in self.held]
        if visible and self.garble:
            self.garble -= 1
            visible[0] = {"seq": visible[0]["seq"], "status": 17, "changedAt": "yesterday"}
        return visible

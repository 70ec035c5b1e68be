"""The simulated order management system (OMS): REST/JSON order intake, slow and sometimes 503.

Wire format:

- ``POST /api/orders`` with an order in the OMS's own shape::

      {"externalOrderId": "O-1", "salesChannel": "WEB", "customerId": "C0001" | null,
       "fulfilmentType": "HOME_DELIVERY" | "STORE_PICKUP" | "STORE_DELIVERY" | "CARRY_OUT",
       "shipToPostalCode": "80331" | null,
       "orderLines": [{"lineNo": 1, "itemNo": "SKU", "qty": 2, "shipNode": "0001",
                       "unitPrice": "12.99", "lineTotal": "25.98"}],
       "orderTotal": "25.98", "currency": "EUR", "placedAt": "2026-01-05T10:00:00Z"}

  Amounts are decimal strings with at most two decimals; ``placedAt`` must carry an offset.
  -> 201 ``{"omsOrderNo": "OMS-0000001", "externalOrderId", "status": "RECEIVED",
  "receivedAt"}``. The same ``externalOrderId`` again -> 200 with exactly that body (the first
  order is kept; the repeat is only counted). Invalid -> 422 ``{"errors": [{"field",
  "message"}]}``; a body that is not a JSON object -> 400.
- ``GET /api/orders`` -> ``{"count", "orders": [{"omsOrderNo", "externalOrderId", "status",
  "receivedAt", "submissions", "order"}]}`` in the order received; ``GET /api/orders/{id}`` one
  of them, or 404. ``status`` is ``RECEIVED``, ``SHIPPED`` or ``CANCELLED``; a repeated submit
  answers the current one.
- ``POST /api/orders/{id}/ship`` (the warehouse or store sent everything): the OMS posts the
  goods issue in the ERP (each line's ``qty`` of ``itemNo`` out of ``shipNode``, one booking
  through the ERP's own tables), then records the shipment -> 200 with the order, whose
  ``goodsIssue`` is ``{"postedAt", "lines": [{"shipNode", "itemNo", "qty"}]}``; ``postedAt`` is
  the ERP's ``LAST_UPD`` of that booking, with its offset. Shipping again answers the same; a
  cancelled order -> 409; ship nodes the ERP does not know -> 422; the ERP unreachable -> 503
  and nothing is recorded.
- ``POST /api/orders/{id}/cancel`` -> 200 with the order, ``CANCELLED``; again, the same; a
  shipped order -> 409.
- ``GET /api/orders/changes?since=0&limit=100`` -> ``{"changes": [{"seq", "omsOrderNo",
  "externalOrderId", "status", "changedAt", "goodsIssue"}], "lastSeq", "hasMore"}``: every
  status an order took (``RECEIVED``, ``SHIPPED``, ``CANCELLED``), numbered 1, 2, ... in the
  order they happened; ``goodsIssue`` is null but for ``SHIPPED``. At most 1000 per read.

Every order, repeat, shipment and cancellation is appended to ``data_dir/oms/received.jsonl``
and replayed at start, so a restart loses nothing (a torn last line from a crash is skipped),
and the change feed comes back with the same numbers. A crash between the ERP booking and the
journal line would book the goods issue again on the next ship: the simulation accepts that.

Faults of the change feed, for tests (simulation only, cleared by ``/_sim/reset``):
``POST /_sim/feed`` with ``{"hold": ["O-1"]}`` holds the next change of each order named back
from the feed, as a transaction that has not committed yet would be (the later numbers show,
its number is missing) until ``{"release": true}``; ``{"garble": 2}`` answers the next two
non-empty reads with their first change malformed.

Failures: an outage answers 503 and stores nothing. A random error (``error_rate``) answers 503
too, but in about half of those cases the order had already been stored, as when a real OMS
commits and then fails to answer. A client that resubmits the same ``externalOrderId`` after a
503 is safe either way: it gets the original number.
"""

from legacy.oms.api import create_app

__all__ = ["create_app"]

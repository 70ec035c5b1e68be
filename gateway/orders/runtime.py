"""The order services the graph's resolvers use, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.orders.changes import OrderChanges
from gateway.orders.placement import OrderService
from gateway.orders.shipments import OrderStatusUpdates
from gateway.orders.store import OrderReader


@dataclass(frozen=True, slots=True)
class Orders:
    service: OrderService
    changes: OrderChanges
    reader: OrderReader
    statuses: OrderStatusUpdates  # what the OMS reports: shipments, cancellations

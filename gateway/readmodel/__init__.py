"""The shared read model: what the legacy systems said, held by entity, kept current by their
change feeds. See docs/read-model.md.

- ``levels``: the two cache levels, in-process (bounded, LRU) and shared (Redis).
- ``model``: the catalogue, prices and rule book through both levels, misses batched and
  coalesced into the ports.
- ``bus``: the change bus: every change published to every instance, with per-feed sequence
  numbers so a missed message is noticed.
- ``feeds``: one follower per legacy change feed, held by one instance at a time (a lease).
- ``responses``: whole answers of shared reads, tagged with the entities they contain.
"""

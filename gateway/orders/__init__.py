"""Orders: placement (sourcing, reservation, idempotency), their life after, and the outbox."""

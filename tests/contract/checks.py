"""The guarantees, as assertions over the outbox and what the receivers got."""

from __future__ import annotations

from tests.contract.world import World


def every_delivery_once(world: World, n: int) -> dict[str, dict[str, object]]:
    """Every recipient has one webhook delivery, settled; the receiver got each at least once where
    it was sent and more than once only where the row is marked in doubt; each request of one
    delivery carried its webhook-id; the database is intact. Returns the rows per user."""
    rows = world.rows("webhook")
    assert set(rows) == {f"u{i}" for i in range(1, n + 1)}, "a recipient was lost or planned twice"
    unsettled = {u: r["state"] for u, r in rows.items() if r["state"] in ("pending", "inflight")}
    assert not unsettled, unsettled
    hits = world.webhook_hits()
    ids: dict[str, set[str | None]] = {}
    for request in world.sink.requests:
        ids.setdefault(request.path.lstrip("/"), set()).add(request.webhook_id)
    for user, row in rows.items():
        if row["state"] == "sent":
            assert hits[user] >= 1, f"{user} recorded sent, never received"
        if hits[user] > 1:
            assert row["in_doubt"] == 1, f"{user} received {hits[user]} times without being in doubt"
        if user in ids:
            assert ids[user] == {row["message_id"]}, f"{user}: webhook-ids {ids[user]}"
    assert all(r.verified for r in world.sink.requests)
    assert world.integrity() == "ok"
    return rows

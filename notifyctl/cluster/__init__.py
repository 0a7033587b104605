"""Scale-out: the same pipeline across machines on Redis.

The coordinator (`notifyctl broadcast --redis URL`) plans into its SQLite outbox as usual, then
publishes prepared envelopes to per-channel Redis Streams; workers (`notifyctl worker`) consume
them through consumer groups, send through their own providers with the same Sender, and report
intents and outcomes to the run's outcome streams, which the coordinator writes into its ledger.
Token buckets, idempotency keys and suppressions are shared through Redis.
"""

"""Database schema as an ordered list of migrations; each runs once, in a transaction.

A migration is SQL text of statements separated by ';', or a list of statements (for trigger
bodies, which contain ';' themselves).
"""

from __future__ import annotations

# Tables whose rows change what policy decides; every change bumps `directory_version.n`, so that a
# page of policy answers read in advance is known to be still true with one single-row read.
POLICY_TABLES = ("suppressions", "suppression_hashes", "preferences")


def _directory_version() -> list[str]:
    statements = [
        "CREATE TABLE directory_version (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
        "INSERT INTO directory_version VALUES (1, 0)",
    ]
    for table in POLICY_TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER {table}_{event.lower()}_version AFTER {event} ON {table} "
                "BEGIN UPDATE directory_version SET n = n + 1 WHERE id = 1; END"
            )
    return statements


MIGRATIONS: list[tuple[str, str | list[str]]] = [
    (
        "0001_core",
        """
        CREATE TABLE users (
            user_id TEXT PRIMARY KEY,
            email TEXT,
            phone TEXT,
            locale TEXT,
            timezone TEXT,
            webhook_url TEXT,
            attributes TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE INDEX users_email ON users(email);
        CREATE INDEX users_phone ON users(phone);

        CREATE TABLE devices (
            user_id TEXT NOT NULL,
            token TEXT NOT NULL,
            platform TEXT,
            created TEXT NOT NULL,
            PRIMARY KEY (user_id, token)
        );

        CREATE TABLE endpoints (
            user_id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            previous_secret TEXT,
            previous_secret_until TEXT,
            client_cert TEXT,
            client_key TEXT,
            disabled_at TEXT,
            disabled_reason TEXT,
            failing_since TEXT
        );

        CREATE TABLE preferences (
            user_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            category TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            source TEXT,
            updated TEXT NOT NULL,
            PRIMARY KEY (user_id, channel, category)
        );

        CREATE TABLE suppressions (
            channel TEXT NOT NULL,
            address TEXT NOT NULL,
            reason TEXT NOT NULL,
            source TEXT,
            created TEXT NOT NULL,
            PRIMARY KEY (channel, address)
        );

        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            campaign_id TEXT,
            template TEXT NOT NULL,
            template_version TEXT NOT NULL,
            category TEXT NOT NULL,
            channels TEXT NOT NULL,
            state TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            audience_path TEXT,
            audience_sha256 TEXT,
            plan_offset INTEGER NOT NULL DEFAULT 0,
            plan_line INTEGER NOT NULL DEFAULT 0,
            planned INTEGER NOT NULL DEFAULT 0,
            send_at TEXT,
            created TEXT NOT NULL,
            started TEXT,
            finished TEXT,
            options TEXT NOT NULL DEFAULT '{}'
        );

        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            line INTEGER,
            user_id TEXT,
            channel TEXT NOT NULL,
            address TEXT,
            idempotency_key TEXT NOT NULL,
            event_id TEXT NOT NULL,
            template TEXT NOT NULL,
            template_version TEXT NOT NULL,
            category TEXT NOT NULL,
            locale TEXT,
            state TEXT NOT NULL,
            reason TEXT,
            defer_until TEXT,
            next_attempt_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            provider TEXT,
            provider_message_id TEXT,
            message_id TEXT NOT NULL,
            error_class TEXT,
            error_message TEXT,
            receipt_status TEXT,
            in_doubt INTEGER NOT NULL DEFAULT 0,
            redrive_of INTEGER,
            data TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE INDEX deliveries_run_state ON deliveries(run_id, state, channel, id);
        CREATE INDEX deliveries_user ON deliveries(user_id);
        CREATE INDEX deliveries_provider_msg ON deliveries(provider_message_id);
        CREATE INDEX deliveries_deferred ON deliveries(state, defer_until) WHERE state = 'deferred';

        CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            delivery_id INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            created REAL NOT NULL
        );

        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL,
            number INTEGER NOT NULL,
            started TEXT NOT NULL,
            latency_ms REAL,
            outcome TEXT NOT NULL,
            provider TEXT NOT NULL,
            code TEXT,
            message TEXT
        );
        CREATE INDEX attempts_delivery ON attempts(delivery_id);

        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL UNIQUE,
            run_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            envelope TEXT,
            error_class TEXT NOT NULL,
            error_message TEXT,
            created TEXT NOT NULL,
            redriven_at TEXT,
            redrive_count INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX dead_letters_run ON dead_letters(run_id);

        CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            delivery_id INTEGER UNIQUE,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            read_at TEXT
        );
        CREATE INDEX inbox_user ON inbox(user_id, id);

        CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        );

        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            created TEXT NOT NULL,
            revoked_at TEXT
        );

        CREATE TABLE inbound_messages (
            sid TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            received TEXT NOT NULL
        );

        CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired TEXT NOT NULL
        );
        """,
    ),
    (
        # Right to erasure: a forgotten user's suppressed addresses survive only as keyed hashes.
        "0002_suppression_hashes",
        """
        CREATE TABLE suppression_hashes (
            channel TEXT NOT NULL,
            address_hash TEXT NOT NULL,
            reason TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (channel, address_hash)
        );
        """,
    ),
    (
        # A change counter for the policy tables (see POLICY_TABLES).
        "0003_directory_version",
        _directory_version(),
    ),
    (
        # Provider message ids are looked up only by delivery receipts, for email (SES) and SMS
        # (Twilio), each query naming its channel. An index over every channel's ids put a random
        # key (a webhook-id, say) into one B-tree per message sent: half of what recording a webhook
        # delivery cost SQLite. Partial indexes keep the receipts' lookups and skip the rest.
        "0004_receipt_indexes",
        """
        DROP INDEX IF EXISTS deliveries_provider_msg;
        CREATE INDEX deliveries_email_msg ON deliveries(provider_message_id) WHERE channel = 'email';
        CREATE INDEX deliveries_sms_msg ON deliveries(provider_message_id) WHERE channel = 'sms';
        """,
    ),
    (
        # Runs whose deliveries are published to Redis workers: where, so that an opt-out written by
        # any process of this database revokes the deliveries already published (see
        # backends/redis/revocations.py), and under which Redis dataset (its generation), so that a
        # resumed coordinator knows whether what it published is still there.
        "0005_cluster_runs",
        """
        CREATE TABLE cluster_runs (
            run_id TEXT PRIMARY KEY,
            redis_url TEXT NOT NULL,
            prefix TEXT NOT NULL,
            identity TEXT NOT NULL,
            generation TEXT NOT NULL,
            attached TEXT NOT NULL
        );
        """,
    ),
    (
        # The installation's secrets (store/secrets.py): they sign unsubscribe links and key the
        # erasure hashes. `secret` holds only one made here at random (or an earlier release's
        # built-in default): a configured secret is never copied in, only its fingerprint and the
        # erasure key derived from it (both one-way). A database an earlier release wrote holds links
        # and hashes made with that release's secret, which it never stored (its configuration's
        # unsubscribe_secret, or a built-in default): a row with no fingerprint marks it, settled at
        # the first use, when the configuration is known.
        "0006_installation_secrets",
        """
        CREATE TABLE installation_secrets (
            id INTEGER PRIMARY KEY,
            secret TEXT UNIQUE,
            fingerprint TEXT UNIQUE,
            erasure_key TEXT,
            origin TEXT NOT NULL,
            created TEXT NOT NULL,
            retired TEXT
        );
        INSERT INTO installation_secrets (secret, origin, created)
            SELECT NULL, 'previous release', strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
            WHERE EXISTS (SELECT 1 FROM deliveries) OR EXISTS (SELECT 1 FROM suppression_hashes)
               OR EXISTS (SELECT 1 FROM audit_events);
        """,
    ),
    (
        # When a push token was last registered (the API, a users import): tokens nobody has
        # registered again for months are pruned (`notifyctl devices prune`). Existing tokens count
        # from when they were first stored.
        "0007_device_last_seen",
        """
        ALTER TABLE devices ADD COLUMN last_seen TEXT;
        UPDATE devices SET last_seen = created;
        """,
    ),
    (
        # Why a run ended `failed` (provider set-up, its input) or `cancelled` (`runs cancel`).
        "0008_run_end_reason",
        "ALTER TABLE runs ADD COLUMN end_reason TEXT;",
    ),
    (
        # The push service a token belongs to: `apns` (Apple's, sent through an APNs provider) or
        # `fcm`. The phone's OS (`platform`) does not say it: an iOS app may well use FCM. Tokens
        # stored before are FCM's.
        "0009_device_service",
        "ALTER TABLE devices ADD COLUMN service TEXT NOT NULL DEFAULT 'fcm'",
    ),
    (
        # `notifyctl consume`'s lag per partition at its last commit, so that `serve`'s /metrics on
        # the same database shows it too (store/kafka_lag.py).
        "0010_kafka_lag",
        """
        CREATE TABLE kafka_lag (
            consumer_group TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            committed INTEGER NOT NULL,
            end_offset INTEGER NOT NULL,
            updated REAL NOT NULL,
            PRIMARY KEY (consumer_group, topic, partition)
        );
        """,
    ),
]

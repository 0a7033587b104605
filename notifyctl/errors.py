"""One exception tree for notifyctl.

    NotifyctlError
     ├── ConfigError          bad or missing setting (names the key and the file); exit 2
     ├── InputError           bad audience/events/user file, flag or argument; exit 2
     │    │                   (carries RowError entries: line number + reason)
     │    └── NotFound        a run, user, dead letter, key, suppression or the database
     │                        named does not exist; exit 2
     ├── StorageError         the database cannot be created, opened or written (a read-only
     │                        directory, say): names the path and the fix; exit 2
     ├── TemplateError        template missing, unsafe, undefined variable, over the size cap
     ├── PolicyRefused        an operation the policy forbids (e.g. redrive past the window)
     └── ProviderError        raised by a provider's send(); the pipeline classifies it
          ├── TransientError(retry_after_s)   not sent: retry with backoff
          │    └── RateLimited(retry_after_s) retry, and slow that provider's bucket
          ├── PermanentError(code)            rejected: never retried; dead letter (a token gone
          │    │                              for good: skipped, not dead)
          │    └── ProviderMisconfigured      the churn guard stopped the provider: what looked like
          │                                   dead tokens is most likely a wrong configuration
          └── OutcomeUnknown                  the request was written, then no clear answer:
                                              in doubt (re-sent only where the receiver dedupes)

Providers map their SDK's exceptions into this tree in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass


class NotifyctlError(Exception):
    """Base of every error notifyctl raises on purpose."""


class ConfigError(NotifyctlError):
    """A missing or wrong setting; the message names the key and the file."""

    def __init__(
        self, message: str, *, key: str | None = None, path: str | None = None, variable: str | None = None
    ) -> None:
        self.key = key
        self.path = path
        self.variable = variable  # the environment variable the wrong value came from (not the file)
        where = []
        if key:
            where.append(f"key '{key}'")
        if variable:
            where.append(f"from the environment variable {variable}")
        elif path:
            where.append(f"in {path}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


@dataclass(frozen=True)
class RowError:
    """One rejected input row."""

    line: int
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.reason}"


class InputError(NotifyctlError):
    """Bad input: a file, a row, a flag. Carries the rejected rows when there are any."""

    def __init__(self, message: str, rows: list[RowError] | None = None) -> None:
        self.rows = rows or []
        super().__init__(message)


class NotFound(InputError):
    """Something named does not exist (a run, a user, a dead letter, a key, the database)."""


class StorageError(NotifyctlError):
    """The database (or the state directory) cannot be created, opened or written; says how to fix it."""


class TemplateError(NotifyctlError):
    """A template could not be loaded or rendered."""

    def __init__(self, message: str, *, template: str | None = None, part: str | None = None) -> None:
        self.template = template
        self.part = part
        prefix = ""
        if template:
            prefix = f"template '{template}'"
            if part:
                prefix += f", part '{part}'"
            prefix += ": "
        super().__init__(prefix + message)


class PolicyRefused(NotifyctlError):
    """An operation refused by policy (for instance a redrive older than the idempotency window)."""


class ProviderError(NotifyctlError):
    """Raised by Provider.send(); never raised past the pipeline."""

    code: str | None = None


class TransientError(ProviderError):
    """Worth retrying later; retry_after_s is a floor for the next attempt when the provider gave one.

    `endpoint`: the error is that one endpoint's (a webhook receiver's 429 or 503, its refused
    connection), not the provider account's: its Retry-After holds back that endpoint's deliveries
    only, and it does not count against the provider's circuit breaker."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        code: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        self.code = code
        self.endpoint = endpoint
        super().__init__(message)


class RateLimited(TransientError):
    """The provider said slow down (HTTP 429, Throttling, QUOTA_EXCEEDED)."""


class PermanentError(ProviderError):
    """Never retried: bad recipient, opted out, rejected content.

    `suppress` asks the pipeline to add the address to the suppression list (Twilio 21610,
    hard bounce); `remove_device` asks it to drop a push token (FCM UNREGISTERED);
    `disable_endpoint` asks it to disable a webhook endpoint (HTTP 410).

    `token_gone`: the push token is gone for good (FCM UNREGISTERED, APNs 410): routine churn, so
    the delivery is settled as skipped (`token_unregistered`), not dead, and the token removed.
    `config_suspect`: this error is also what a wrong project, key or environment produces (FCM
    SENDER_ID_MISMATCH, APNs BadDeviceToken); the text names that likely cause. The pipeline's churn
    guard (pipeline/churn.py) decides before any token is removed whether it is churn or configuration.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        suppress: bool = False,
        remove_device: bool = False,
        disable_endpoint: bool = False,
        token_gone: bool = False,
        config_suspect: str | None = None,
    ) -> None:
        self.code = code
        self.suppress = suppress
        self.remove_device = remove_device
        self.disable_endpoint = disable_endpoint
        self.token_gone = token_gone
        self.config_suspect = config_suspect
        super().__init__(message)


class ProviderMisconfigured(PermanentError):
    """A provider stopped by the churn guard (pipeline/churn.py): most of its first answers (or of
    one batch) were errors a wrong configuration also produces. Nothing is removed; the delivery is
    dead with this message, for `dlq redrive` once the configuration is fixed."""


class OutcomeUnknown(ProviderError):
    """The request reached the provider (it was written), then a timeout, a reset or an unreadable
    answer: the message may exist. Never retried as if nothing was sent; the delivery is in doubt.

    `endpoint`: as for TransientError, one endpoint's trouble (a webhook receiver that stalls after
    taking the request), which does not count against the provider's circuit breaker."""

    def __init__(self, message: str, *, code: str | None = None, endpoint: str | None = None) -> None:
        self.code = code
        self.endpoint = endpoint
        super().__init__(message)


class Withdrawn(Exception):
    """Raised by a Recorder's `intent` when policy no longer allows the delivery (an opt-out landed
    between the decision and the intent's commit); the delivery is settled and not sent."""


class Taken(Withdrawn):
    """Raised by a Recorder's `intent` when the row was no longer pending as read: another sender
    process of the run claimed it first (see Engine._feed). Not sent here; that process reports it."""

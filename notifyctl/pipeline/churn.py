"""The churn guard: a configuration error must not pass for token churn.

Some provider errors say "this token is not ours" as well as "our configuration is wrong": FCM
answers SENDER_ID_MISMATCH to a token another sender registered, and to every token when the
service-account key and project_id belong to another Firebase project (APNs answers BadDeviceToken
to every token of the other environment). Providers mark such errors `config_suspect`, naming the
likely cause. If those tokens were removed, one wrong setting would wipe the directory's devices.
So before any token is removed, the guard looks at each provider account's answers:

    a provider call of MIN_BATCH messages or more whose answers are mostly suspect, or more than
    half of the provider's first WINDOW answers suspect
        → the provider is stopped. This call's suspect answers, and every later dispatch to it
          (refused without a call), become ProviderMisconfigured: the delivery is dead with a
          message naming the provider and the likely cause, for `dlq redrive` once it is fixed.
          No token is removed.
    fewer than WINDOW answers seen so far
        → a suspect answer is held back: recorded as not sent and retried with the usual
          backoff; nothing is removed yet
    the first WINDOW answers seen, and they were mostly fine
        → churn: a suspect answer is a rejection like any other (the token is removed)

A retried delivery's answer counts again. Each Sender has its own guard, so every process that
calls providers (the embedded engine, each sender process, each Redis worker) judges what it sees,
and the rule holds on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from notifyctl.errors import PermanentError, ProviderMisconfigured, TransientError
from notifyctl.models import SendResult

WINDOW = 20  # a provider's first answers, which tell a wrong configuration from churn
MIN_BATCH = 10  # a provider call with this many answers decides on its own

Answer = SendResult | BaseException | None


@dataclass
class _Tally:
    answers: int = 0
    suspect: int = 0


def _suspect(answer: Answer) -> PermanentError | None:
    if isinstance(answer, PermanentError) and answer.config_suspect:
        return answer
    return None


class ChurnGuard:
    """The judge of one Sender's provider answers; see the module docstring."""

    def __init__(self, window: int = WINDOW, min_batch: int = MIN_BATCH) -> None:
        self.window = window
        self.min_batch = min_batch
        self._tallies: dict[str, _Tally] = {}
        self.stopped: dict[str, ProviderMisconfigured] = {}

    def refusal(self, provider: str) -> ProviderMisconfigured | None:
        """What every dispatch to a stopped provider gets instead of a call; None while it is not."""
        return self.stopped.get(provider)

    def screen(self, provider: str, answers: list[Answer], called: Sequence[int]) -> None:
        """Judge one provider call: `answers[i]` for i in `called` are its answers. Each suspect error
        among them is replaced, in place, by what the guard decided: held back, or the provider stopped."""
        suspects = [(i, error) for i in called if (error := _suspect(answers[i])) is not None]
        tally = self._tallies.setdefault(provider, _Tally())
        judging = tally.answers < self.window
        if judging:
            tally.answers += len(called)
            tally.suspect += len(suspects)
        if not suspects:
            return
        stopped = self.stopped.get(provider)
        if stopped is None:
            one_call = len(called) >= self.min_batch and 2 * len(suspects) > len(called)
            # More than half of the window is suspect already, or the call that filled it left a majority.
            first_ones = judging and (
                2 * tally.suspect > self.window or (tally.answers >= self.window and 2 * tally.suspect > tally.answers)
            )
            if one_call or first_ones:
                seen = (
                    f"{len(suspects)} of the {len(called)} answers of one call"
                    if one_call
                    else f"{tally.suspect} of its first {tally.answers} answers"
                )
                stopped = self.stopped[provider] = _stopped(provider, seen, [error for _, error in suspects])
        for i, error in suspects:
            if stopped is not None:
                answers[i] = stopped
            elif tally.answers < self.window:
                answers[i] = TransientError(
                    f"held back, token kept: the first answers of provider '{provider}' cannot tell a wrong "
                    f"configuration from token churn yet ({error})",
                    code=error.code,
                )


def _stopped(provider: str, seen: str, errors: list[PermanentError]) -> ProviderMisconfigured:
    """The error of a stopped provider: which answers, and the likely cause."""
    codes = ", ".join(sorted({str(error.code) for error in errors}))
    return ProviderMisconfigured(
        f"provider '{provider}' stopped: {seen} were {codes}, which a wrong configuration also gives: "
        f"most likely {errors[0].config_suspect}, not token churn. No token was removed; fix "
        f"[providers.{provider}], then redrive the dead letters",
        code=errors[0].code,
    )

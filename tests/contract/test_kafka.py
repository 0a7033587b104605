"""The contract cases that apply to the Kafka front door (`notifyctl consume`), run on the kafka path
(tests/contract/paths.py Kafka): the same test functions as the other paths', chosen here rather
than by adding kafka to PATHS, so that each case joins as it is shown to apply.

Not here: test_optouts (its second assertion expects the last users of the audience to be reached
last; events keyed by user on three partitions are consumed interleaved, so a user near the end may
be sent before the opt-out; that nothing is sent after an opt-out commits did hold on this path),
test_delivery, test_backpressure, test_tokens, test_secrets (campaign runs, redrive and quiet-hours
releases not yet driven through the kafka path), test_redis_restart (consume --redis untested)."""

from __future__ import annotations

import pytest

from tests.contract import test_crash, test_unknown_outcome

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("path_name", ["kafka"])]

test_killed_after_the_receiver_accepted_and_before_the_outcome_was_recorded = (
    test_crash.test_killed_after_the_receiver_accepted_and_before_the_outcome_was_recorded
)
test_killed_at_a_random_point = test_crash.test_killed_at_a_random_point
test_a_webhook_taken_then_answered_too_late_is_in_doubt_and_resent = (
    test_unknown_outcome.test_a_webhook_taken_then_answered_too_late_is_in_doubt_and_resent
)

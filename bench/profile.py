"""Where the time goes: summarise py-spy raw (collapsed) stacks of a notifyctl run.

    python bench/broadcast.py --recipients 100000 --no-peers --profile /tmp/broadcast.stacks
    python bench/profile.py /tmp/broadcast.stacks [--top 30]

Prints, per thread, the share of samples (a) by the deepest notifyctl function on the stack
(the notifyctl code responsible for the time, library calls included), (b) by leaf function
(self time) and (c) inclusive shares of the stages named in STAGES.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")

# Inclusive stage shares: a sample counts for a stage when any frame matches (function, file part).
STAGES: list[tuple[str, str, str]] = [
    ("plan: read + validate audience rows", "audience_source", "notifyctl/app/broadcast.py"),
    ("plan: Planner.plan_batch", "Planner.plan_batch", "pipeline/planner.py"),
    ("feed: pending_page + get_users", "Feeder.feed", "pipeline/lanes.py"),
    ("  feed: endpoints.credentials (SQL)", "credentials", "store/endpoints.py"),
    ("plan + deliver: Policy.decide (both checks)", "Policy.decide", "notifyctl/policy/decide.py"),
    ("deliver: LaneDispatch.prepare (policy again + build)", "LaneDispatch.prepare", "pipeline/dispatch.py"),
    ("deliver: EnvelopeBuilder.build", "EnvelopeBuilder.build", "pipeline/envelope.py"),
    ("  build: context (incl. unsubscribe_url)", "EnvelopeBuilder.context", "pipeline/envelope.py"),
    ("  build: Template.render", "render", "notifyctl/templates/template.py"),
    ("  build: Envelope model", "__init__", "pydantic/main.py"),
    ("deliver: token bucket acquire", "TokenBucket.acquire", "backends/local.py"),
    ("deliver: Sender.transmit_batch (all of a send)", "Sender.transmit_batch", "pipeline/sender.py"),
    ("deliver: WebhookProvider.send", "WebhookProvider.send", "providers/webhook.py"),
    ("  send: signature_header", "signature_header", "notifyctl/security/signing.py"),
    ("  send: aiohttp request", "ClientSession._request", "aiohttp/client.py"),
    ("deliver: LedgerClaims.claim (intent, await)", "LedgerClaims.claim", "backends/local.py"),
    ("ledger: Ledger._run (event-loop side)", "Ledger._run", "store/ledger.py"),
    ("ledger thread: Ledger._commit", "Ledger._commit", "store/ledger.py"),
    ("  commit: mark_inflight_many", "mark_inflight_many", "store/outbox.py"),
    ("  commit: mark_sent_many", "mark_sent_many", "store/outbox.py"),
    ("event loop: _run_once / select", "_run_once", "asyncio/base_events.py"),
    ("engine: LaneDispatch.work (everything per message)", "LaneDispatch.work", "pipeline/dispatch.py"),
]


def parse(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """(thread, frames root→leaf as (function, file), samples)."""
    stacks = []
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        # With --subprocesses (broadcast.py --profile, several sender processes) a stack starts with
        # its chain of processes: the parent's threads are "thread …", a sibling's "sibling thread …".
        processes = 0
        while parts and parts[0].startswith("process"):
            processes, parts = processes + 1, parts[1:]
        thread = parts[0] if parts and parts[0].startswith("thread") else "?"
        if processes > 1:
            thread = "sibling " + thread
        frames: list[tuple[str, str]] = []
        for frame in parts:
            match = FRAME.match(frame)
            if match:
                frames.append((match["func"], match["file"]))
        stacks.append((re.sub(r"thread \(\d+\):?\s*", "thread ", thread).strip(), frames, int(count)))
    return stacks


def stage_match(frames: list[tuple[str, str]], func: str, file_part: str) -> bool:
    return any(f == func or (f.endswith("." + func) and file_part in path) for f, path in frames if file_part in path)


def summarise(path: Path, top: int) -> str:
    stacks = parse(path)
    total = sum(n for _, _, n in stacks) or 1
    by_thread: Counter[str] = Counter()
    owner: dict[str, Counter[str]] = defaultdict(Counter)
    leaf: dict[str, Counter[str]] = defaultdict(Counter)
    stages: Counter[str] = Counter()
    for thread, frames, n in stacks:
        by_thread[thread] += n
        ours = [
            f"{func} ({file.split('notifyctl/', 1)[-1]})"
            for func, file in frames
            if "notifyctl/" in file and "/bench/" not in file and "/cli.py" not in file
        ]
        owner[thread][ours[-1] if ours else "(no notifyctl frame: start-up, imports, interpreter)"] += n
        if frames:
            func, file = frames[-1]
            leaf[thread][f"{func} ({'/'.join(file.split('/')[-2:])})"] += n
        for label, func, file_part in STAGES:
            if stage_match(frames, func, file_part):
                stages[label] += n
    lines = [f"{path}: {total:,} samples"]
    for thread, n in by_thread.most_common():
        lines.append(f"\n== {thread}: {n:,} samples ({n / total:.1%} of all)")
        lines.append("-- by deepest notifyctl function (library time included)")
        lines.extend(f"{c / total:7.1%}  {name}" for name, c in owner[thread].most_common(top))
        lines.append("-- by leaf function (self time)")
        lines.extend(f"{c / total:7.1%}  {name}" for name, c in leaf[thread].most_common(top))
    lines.append("\n== stages (inclusive, share of all samples)")
    lines.extend(f"{stages[label] / total:7.1%}  {label}" for label, _, _ in STAGES)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.stacks, args.top))


if __name__ == "__main__":
    main()

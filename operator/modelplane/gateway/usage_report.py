"""`modelplane usage`: spend per namespace and model from the usage ledger, and when a
Serverless tenant's steady traffic would be cheaper on its own OnDemand deployment.

The rule of thumb (the seed's): above ~100K tokens per hour of steady traffic, a dedicated
deployment usually costs less than per-token prices. Steady here: the window's requests span
at least half of it (a one-off burst is not a reason to buy a GPU).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from modelplane.catalog.prices import ONDEMAND_TOKENS_PER_HOUR
from modelplane.gateway.ledger import Ledger, Total


def report(
    totals: Iterable[Total],
    window_hours: float,
    now: float,
    tiers: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """The table and the hints. `tiers`: (namespace, deployment) -> tier, when known (rows of
    unknown tier get the hint too: they are metered, so they pay per token)."""
    rows = list(totals)
    head = (
        f"{'NAMESPACE':<20} {'DEPLOYMENT':<20} {'MODEL':<28} {'KIND':<6} {'REQUESTS':>9} "
        f"{'PROMPT':>11} "
        f"{'COMPLETION':>11} {'AUDIO_MIN':>9} {'TOKENS/H':>10} {'COST_USD':>11}"
    )
    lines = [f"usage of the last {window_hours:g} h", head]
    hints: list[str] = []
    spend: dict[str, float] = {}
    for t in rows:
        per_hour = t.tokens / window_hours if window_hours > 0 else 0.0
        lines.append(
            f"{t.namespace:<20} {t.deployment or '-':<20} {t.model:<28} "
            f"{'batch' if t.batch else 'online':<6} {t.requests:>9} "
            f"{t.prompt_tokens:>11} {t.completion_tokens:>11} {t.audio_seconds / 60:>9.1f} "
            f"{per_hour:>10.0f} {t.cost_usd:>11.4f}"
        )
        spend[t.namespace] = spend.get(t.namespace, 0.0) + t.cost_usd
        tier = (tiers or {}).get((t.namespace, t.deployment), "Serverless")
        span = (t.last_at or now) - (t.first_at or now)
        steady = span >= 0.5 * window_hours * 3600
        if tier == "Serverless" and steady and per_hour > ONDEMAND_TOKENS_PER_HOUR:
            hints.append(
                f"{t.namespace}/{t.deployment or t.model}: steady {per_hour:,.0f} tokens/hour "
                f"(> ~{ONDEMAND_TOKENS_PER_HOUR:,}): an OnDemand deployment of {t.model} is "
                "likely cheaper (spec.tier: OnDemand; compare with its status.cost)."
            )
    if not rows:
        lines.append("(no metered requests in this window)")
    for ns, usd in sorted(spend.items()):
        lines.append(f"total {ns}: ${usd:.4f}")
    return "\n".join(lines + hints) + "\n"


def run(ledger: Ledger, hours: float, namespace: str | None = None) -> str:
    now = time.time()
    return report(ledger.totals(namespace, since=now - hours * 3600), hours, now)

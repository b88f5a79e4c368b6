"""modelplane.autoscaling: the pure autoscaling policy and engine metric parsing.

No kopf and no Kubernetes client here; the operator's wiring feeds ``MetricSample``s
(from ``metrics.FleetCollector`` or ``metrics.PrometheusSource``) into a
``MetricHistory`` and applies ``decide(...)``'s ``Decision.desired_replicas``.
"""

from modelplane.autoscaling.policy import (
    AutoscalingPolicy,
    Decision,
    MetricHistory,
    MetricSample,
    Reason,
    decide,
    validate_policy,
)

__all__ = [
    "AutoscalingPolicy",
    "Decision",
    "MetricHistory",
    "MetricSample",
    "Reason",
    "decide",
    "validate_policy",
]

"""What a ModelDeployment's name must be for every object derived from it to be valid.

A ModelDeployment is a custom resource, so the apiserver alone accepts any DNS subdomain
(up to 253 characters, dots allowed). Its name, though, becomes:

* the name of its Service (and of a Serverless tenant's ExternalName Service): a DNS label of at
  most 63 characters. Kubernetes before 1.36 validates Service names as RFC 1035 labels, which
  must start with a letter; RFC 1123 labels (a leading digit, e.g. `8b-chat`) are accepted only
  since the RelaxedServiceNameValidation feature gate (alpha, off by default in 1.34; beta, on by
  default in 1.36). The chart supports Kubernetes 1.30 and later, so names follow RFC 1035;
* the name of its Deployment and PodDisruptionBudget, and `<name>-warm` for warm-node
  placeholders (DNS subdomains: up to 253);
* the value of the labels `app.kubernetes.io/instance`, `modelplane.io/deployment` and
  `modelplane.io/warm-pool` on every child (label values: at most 63).

Cache objects (`weights-<key>`, `fill-<key>`, `cache-<key>-<node>`) and Serverless backends
(`sls-...`) are named from the weights and serving shape, not from the ModelDeployment. So the
longest safe name is 63 characters, set by the Service name and the label values; the CRD
rejects longer names and names a Service could not carry, at admission.
"""

from __future__ import annotations

import re

#: The oldest Kubernetes the chart supports (charts/modelplane/Chart.yaml kubeVersion).
OLDEST_KUBERNETES = "1.30"
#: Service names and label values: at most 63 characters.
MAX_NAME_LENGTH = 63
#: RFC 1035 label: what every supported Kubernetes accepts as a Service name.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

LENGTH_MESSAGE = (
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters: it names the model's Service "
    "and is a label value on every object created for it"
)
FORMAT_MESSAGE = (
    "metadata.name must start with a lowercase letter and contain only lowercase letters, digits "
    "and '-' (an RFC 1035 label): it names the model's Service, and Kubernetes before 1.36 "
    f"(this release supports {OLDEST_KUBERNETES} and later) rejects Service names that start "
    "with a digit or contain '.'; e.g. chat-8b rather than 8b-chat"
)

#: Root-level CEL rules of the ModelDeployment CRD (x-kubernetes-validations can read
#: self.metadata.name there).
NAME_RULES: list[dict[str, str]] = [
    {"rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}", "message": LENGTH_MESSAGE},
    {"rule": f"self.metadata.name.matches('{NAME_PATTERN}')", "message": FORMAT_MESSAGE},
]


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a ModelDeployment's name (None: it can). The CRD enforces the same
    rules; this catches objects stored before it did."""
    if len(name) > MAX_NAME_LENGTH:
        return LENGTH_MESSAGE
    if not re.match(NAME_PATTERN, name):
        return FORMAT_MESSAGE
    return None

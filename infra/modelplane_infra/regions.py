"""Which regions this project deploys to, and which GPU kinds each region offers.

The table is deliberately small and conservative: a GPU kind is listed for a region only where
the cloud's public documentation listed the machine type there when the table was written. It
exists so that a stack fails at `pulumi preview` with a readable message instead of minutes into
`pulumi up` with a capacity error. It is not a capacity guarantee: quotas, Capacity Blocks and
per-zone stock still decide whether a node can be launched, and Karpenter (EC2) and GKE's
autoscaler check offerings again at run time.

Sources (re-check before adding a row; the commands list what an account really sees):
- AWS: "Amazon EC2 instance types by Region" in the EC2 instance-types guide, and the P5, P4,
  G6e, G6 and G5 product pages. Verify with
  `aws ec2 describe-instance-type-offerings --region R --filters Name=instance-type,Values=p5.48xlarge`.
  p5e.48xlarge (H200) was announced for us-east-2 (Capacity Blocks); it is listed nowhere else here.
- GCP: "GPU regions and zones availability" in the Compute Engine GPU docs, and the
  accelerator-optimized machine family page (A3 High = H100 80GB, A2 Ultra = A100 80GB,
  A2 Standard = A100 40GB, G2 = L4). Verify with
  `gcloud compute accelerator-types list --filter="zone ~ ^us-central1"`.
  GCP has no L40S or A10G machine types (the operator's catalog has no GCP equivalent for them).

Instance types and machine types themselves come from `modelplane.catalog.accelerators`; this
table only says where they may be requested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelplane.catalog.accelerators import ACCELERATORS_BY_NAME, Accelerator, InstanceShape


@dataclass(frozen=True)
class RegionOffer:
    """GPU kinds one region offers.

    For AWS the values are EC2 instance types; for GCP they are the zones in which the
    accelerator's machine type exists (GKE GPU node pools must name their zones).
    """

    cloud: str
    region: str
    gpus: Mapping[str, tuple[str, ...]]


_AWS: tuple[RegionOffer, ...] = (
    RegionOffer(
        "aws",
        "us-east-1",
        {
            "nvidia-h100-80gb": ("p5.48xlarge",),
            "nvidia-a100-80gb": ("p4de.24xlarge",),
            "nvidia-a100-40gb": ("p4d.24xlarge",),
            "nvidia-l40s-48gb": ("g6e.12xlarge",),
            "nvidia-l4-24gb": ("g6.xlarge", "g6.12xlarge"),
            "nvidia-a10g-24gb": ("g5.xlarge",),
        },
    ),
    RegionOffer(
        "aws",
        "us-east-2",
        {
            "nvidia-h100-80gb": ("p5.48xlarge",),
            "nvidia-h200-141gb": ("p5e.48xlarge",),
            "nvidia-a100-40gb": ("p4d.24xlarge",),
            "nvidia-l40s-48gb": ("g6e.12xlarge",),
            "nvidia-l4-24gb": ("g6.xlarge", "g6.12xlarge"),
            "nvidia-a10g-24gb": ("g5.xlarge",),
        },
    ),
    RegionOffer(
        "aws",
        "us-west-2",
        {
            "nvidia-h100-80gb": ("p5.48xlarge",),
            "nvidia-a100-80gb": ("p4de.24xlarge",),
            "nvidia-a100-40gb": ("p4d.24xlarge",),
            "nvidia-l40s-48gb": ("g6e.12xlarge",),
            "nvidia-l4-24gb": ("g6.xlarge", "g6.12xlarge"),
            "nvidia-a10g-24gb": ("g5.xlarge",),
        },
    ),
    RegionOffer(
        "aws",
        "eu-west-1",
        {
            "nvidia-a100-40gb": ("p4d.24xlarge",),
            "nvidia-a10g-24gb": ("g5.xlarge",),
        },
    ),
)

_GCP: tuple[RegionOffer, ...] = (
    RegionOffer(
        "gcp",
        "us-central1",
        {
            "nvidia-h100-80gb": ("us-central1-a", "us-central1-c"),
            "nvidia-a100-80gb": ("us-central1-a", "us-central1-c"),
            "nvidia-a100-40gb": (
                "us-central1-a",
                "us-central1-b",
                "us-central1-c",
                "us-central1-f",
            ),
            "nvidia-l4-24gb": ("us-central1-a", "us-central1-b", "us-central1-c"),
        },
    ),
    RegionOffer(
        "gcp",
        "europe-west4",
        {
            "nvidia-h100-80gb": ("europe-west4-b", "europe-west4-c"),
            "nvidia-a100-40gb": ("europe-west4-a", "europe-west4-b"),
            "nvidia-l4-24gb": ("europe-west4-a", "europe-west4-b", "europe-west4-c"),
        },
    ),
)

REGIONS: dict[str, dict[str, RegionOffer]] = {
    "aws": {o.region: o for o in _AWS},
    "gcp": {o.region: o for o in _GCP},
}


def offer(cloud: str, region: str) -> RegionOffer:
    """The offer table of one region; KeyError if the region is not listed."""
    return REGIONS[cloud][region]


def aws_shapes(region: str, gpu: str) -> tuple[InstanceShape, ...]:
    """The catalog shapes of `gpu` that `region` offers, smallest first."""
    names = set(offer("aws", region).gpus[gpu])
    return tuple(s for s in ACCELERATORS_BY_NAME[gpu].shapes if s.name in names)


def gcp_shapes(gpu: str) -> tuple[InstanceShape, ...]:
    """The catalog shapes of `gpu` that have a GCP machine type."""
    return tuple(s for s in ACCELERATORS_BY_NAME[gpu].shapes if s.gcp_equivalent)


def gcp_zones(region: str, gpu: str) -> tuple[str, ...]:
    return offer("gcp", region).gpus[gpu]


def accelerators(names: tuple[str, ...] | list[str]) -> list[Accelerator]:
    return [ACCELERATORS_BY_NAME[n] for n in names]


def _check_table() -> None:
    """The table may only name catalog accelerators and catalog shapes (import-time guard)."""
    for offers in REGIONS.values():
        for o in offers.values():
            for gpu, where in o.gpus.items():
                acc = ACCELERATORS_BY_NAME[gpu]
                if o.cloud == "aws":
                    known = {s.name for s in acc.shapes}
                    missing = set(where) - known
                    if missing:
                        raise ValueError(f"{o.region}/{gpu}: {sorted(missing)} not in the catalog")
                else:
                    if not gcp_shapes(gpu):
                        raise ValueError(f"{o.region}/{gpu}: the catalog has no GCP machine type")
                    bad = [z for z in where if not z.startswith(f"{o.region}-")]
                    if bad:
                        raise ValueError(f"{o.region}/{gpu}: zones {bad} are not in the region")


_check_table()

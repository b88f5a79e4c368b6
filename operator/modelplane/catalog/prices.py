"""Per-model prices of metered (Serverless) use, in US dollars.

Text models are priced per million tokens, input and output separately; speech-to-text per
minute of audio. These are the seed's Serverless list prices (Llama 3.3 70B $0.90 in and out,
Llama 3.1 405B $3.00, Nomic Embed $0.008, Whisper $0.20 per audio minute). A model without an
entry is metered (tokens are counted) but costs 0.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A Serverless tenant whose steady traffic exceeds this many tokens per hour is usually
#: cheaper on its own OnDemand deployment (the seed's rule of thumb).
ONDEMAND_TOKENS_PER_HOUR = 100_000


@dataclass(frozen=True)
class Price:
    input_per_million: float = 0.0
    output_per_million: float = 0.0
    audio_per_minute: float = 0.0


PRICES: dict[str, Price] = {
    "llama-v3p3-70b-instruct": Price(0.90, 0.90),
    "llama-v3p1-405b-instruct": Price(3.00, 3.00),
    "nomic-embed-text-v1p5": Price(0.008, 0.0),
    "whisper-v3": Price(audio_per_minute=0.20),
    "whisper-v3-turbo": Price(audio_per_minute=0.20),
}


def price_of(model: str) -> Price | None:
    return PRICES.get(model)

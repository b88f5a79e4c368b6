"""`modelplane gateway`: the OpenAI-compatible request path in front of the model servers.

routing (pure: ModelDeployments + Ready pods -> who serves which `model`), keys (API keys as
salted hashes in labelled ConfigMaps), app (the ASGI app: auth, routing, hold at zero, replica
choice, streaming passthrough, metering), kube (discovery and the demand annotations), main
(settings, uvicorn, graceful drain).
"""

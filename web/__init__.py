"""The HTTP layer: middleware, rate limits, threat scoring, versioning, error envelopes, probes."""

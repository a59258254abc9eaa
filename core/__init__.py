"""The kernel every app imports: errors, validation, logging, the cache, the embedded database."""

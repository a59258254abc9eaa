"""event_logger: a Chatter plugin (see chatter_plugin.json)."""

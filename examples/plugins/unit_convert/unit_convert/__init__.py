"""unit_convert: a Chatter plugin (see chatter_plugin.json)."""

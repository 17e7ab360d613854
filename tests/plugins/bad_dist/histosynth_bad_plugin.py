"""A broken plugin: its entry point names something that is not a GeneratorMeta."""

NOT_META = {"name": "broken"}

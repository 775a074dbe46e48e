"""One dynamic partition per batch of media items (an Id range), plus `all` for the CLI."""

import dagster as dg

PARTITIONS_NAME = "media_items"
media_item_partitions = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)

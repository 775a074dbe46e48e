"""One dynamic partition per batch of media items (an Id range), plus `all` for the CLI."""

import dagster as dg

media_item_partitions = dg.DynamicPartitionsDefinition(name="media_items")

"""Stage `prepare`: corpus -> documents -> sentences -> windows of token ids, in the store."""

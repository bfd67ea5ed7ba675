"""Stage `extract`: every pending unit through the model, written as whole shards and then marked."""

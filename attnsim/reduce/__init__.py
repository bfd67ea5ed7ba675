"""Stage `reduce`: the store's top-k neighbours -> corpus statistics (Dask over blocks, Polars tables)."""

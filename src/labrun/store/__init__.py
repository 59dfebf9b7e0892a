"""Reading runs back from the tracking store: one `get_run`, queries, stored artifacts."""

"""The Data page: the data source, its preview, columns and splits."""

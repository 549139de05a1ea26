"""The app's pages, in the order a run is set up: models, method, data, train, compare, runs."""

"""The Method page: task family, method, loss weights, explained."""

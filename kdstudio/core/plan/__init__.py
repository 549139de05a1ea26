"""Before a run: model shapes, memory and time estimates."""

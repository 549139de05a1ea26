"""KD Studio's shipped resources, installed as the package kdstudio.resources (see pyproject.toml)."""

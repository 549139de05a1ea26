"""Before a run: model shapes (shapes.py), memory and tokens (memory.py), what earlier runs
measured (measured.py) and time (time.py). The device comes from core/device.py."""

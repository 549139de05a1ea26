"""The engine: configs, models, data, losses, the training loop, evaluation and the run store.

Nothing in this package imports Qt; the desktop app and the command line both drive it.
"""

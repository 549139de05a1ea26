"""The Runs page: every past run, its curves, figures and actions."""

"""Widgets the pages are built from (files are prefixed with the page that owns them)."""

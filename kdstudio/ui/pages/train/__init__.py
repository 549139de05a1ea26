"""The Train page: settings, live plots, log and pinned answers."""

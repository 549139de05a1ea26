"""The Tradeoff page: several students of one teacher on one chart."""

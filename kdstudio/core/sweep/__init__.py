"""The tradeoff explorer: a queue of students of one teacher, its plan and its figures."""

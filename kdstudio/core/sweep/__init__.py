"""The tradeoff explorer: students and axis (spec.py), the queue file (store.py), running it
(queue.py), its time and teacher (plan.py), a budget's sizes (budget.py), figures (figures.py)."""

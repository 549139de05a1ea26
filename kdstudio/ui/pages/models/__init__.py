"""The Models page: teacher and student, their cards and compatibility."""

"""The Compare page: teacher and student side by side."""

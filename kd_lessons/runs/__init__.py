"""Runs of students: one loop (`students.train_students`) behind every comparison the course makes.

Modules: `students` (the loop, summaries, paired differences), `grid` (T x alpha table, cached),
`deploy` (size and latency table), `hinton2015` (the paper's MNIST experiments).
"""

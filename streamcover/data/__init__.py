"""Recordings as feature matrices with work labels, and how they are cut into chunks.

Training (``streamcover.train``) and evaluation (``streamcover.eval``) both read data
through this package, so imports go one way: train -> eval -> data.
"""

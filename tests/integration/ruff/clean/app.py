"""A clean module."""


def add(a, b):
    return a + b

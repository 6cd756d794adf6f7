import os
import sys


def main(value=None):
    double = lambda x: x * 2  # E731 is ignored by the configuration
    if value == None:
        return double(1)
    return sys.argv

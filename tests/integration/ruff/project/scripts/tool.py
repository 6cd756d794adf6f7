import json


def run(value):
    return value != None

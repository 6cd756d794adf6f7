#!/usr/bin/env python3
"""Writes a C header that holds a text file as a NUL-terminated char array (no string literal:
it may be longer than C17's 4,095 characters): embed-text.py IN OUT NAME."""
import sys

src, out, name = sys.argv[1:4]
data = open(src, "rb").read()
if b"\0" in data:
    sys.exit("embed-text.py: %s holds a NUL byte" % src)
rows = [", ".join("0x%02x" % b for b in data[i:i + 16]) for i in range(0, len(data), 16)]
with open(out, "w") as f:
    f.write("/* Generated from %s by scripts/embed-text.py: do not edit. */\n" % src.split("/")[-1])
    f.write("static const char %s[] = {\n    %s,\n    0x00};\n" % (name, ",\n    ".join(rows)))

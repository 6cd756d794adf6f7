#!/usr/bin/env python3
"""The shape rules of docs/ARCHITECTURE.md, checked on the tree and a build of it:

  - no source file in lib/, src/ or agent/ over 1,200 lines;
  - no function over 100 lines (ctags-universal finds each function's first and last line;
    tables are data, not functions, and are not counted);
  - no call cycles between files: from the built objects (nm), file A depends on file B when A
    uses a symbol B defines; every strongly connected group of more than one file is a cycle.

usage: check-structure.py [--build DIR] [--report]
  --build DIR  the meson build directory whose objects are read (default: build)
  --report     print every finding and exit 0 (the default exits 1 when a rule is broken)
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DIRS = ("lib", "src", "agent")
MAX_FILE_LINES = 1200
MAX_FUNCTION_LINES = 100


def sources():
    for d in DIRS:
        for base, _, names in os.walk(os.path.join(ROOT, d)):
            for n in sorted(names):
                if n.endswith(".c"):
                    yield os.path.relpath(os.path.join(base, n), ROOT)


def long_files(files):
    out = []
    for f in files:
        with open(os.path.join(ROOT, f), errors="replace") as fh:
            n = sum(1 for _ in fh)
        if n > MAX_FILE_LINES:
            out.append("%s: %d lines (at most %d)" % (f, n, MAX_FILE_LINES))
    return out


def long_functions(files):
    try:
        res = subprocess.run(["ctags-universal", "--c-kinds=f", "--fields=+ne", "-o", "-"] +
                             [os.path.join(ROOT, f) for f in files],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit("check-structure: universal-ctags is needed (apt-get install universal-ctags): %s" % e)
    out = []
    for line in res.stdout.splitlines():
        cols = line.split("\t")
        fields = dict(c.split(":", 1) for c in cols[3:] if ":" in c)
        if "line" not in fields or "end" not in fields:
            continue
        n = int(fields["end"]) - int(fields["line"]) + 1
        if n > MAX_FUNCTION_LINES:
            out.append("%s:%s: %s is %d lines (at most %d)" %
                       (os.path.relpath(cols[1], ROOT), fields["line"], cols[0], n, MAX_FUNCTION_LINES))
    return sorted(out)


def objects(build):
    """Each object file of the build that comes from lib/, src/ or agent/, with its source."""
    for base, _, names in os.walk(build):
        for n in names:
            if not n.endswith(".c.o"):
                continue
            path = os.path.join(base, n)
            # meson names objects after their source: lib/service/pool.c -> service_pool.c.o in
            # <target>.p/; the target directory tells which tree it is.
            rel = os.path.relpath(base, build).split(os.sep)[0]
            if rel not in DIRS:
                continue
            yield rel, path


def symbol_graph(build):
    defined = {}
    used = {}
    for tree, obj in objects(build):
        name = tree + "/" + os.path.basename(obj)[:-len(".o")]
        res = subprocess.run(["nm", "-P", obj], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            sym, kind = parts[0], parts[1]
            if kind == "U":
                used.setdefault(name, set()).add(sym)
            elif kind in "TDBRVWCG":
                defined.setdefault(sym, set()).add(name)
    graph = {}
    for name, syms in used.items():
        for s in syms:
            for owner in defined.get(s, ()):
                # The library and the agent are linked apart: an edge stays within one tree,
                # except src -> lib (the CLI links the library).
                if owner != name and (owner.split("/")[0] == name.split("/")[0] or
                                      (name.startswith("src/") and owner.startswith("lib/"))):
                    graph.setdefault(name, set()).add(owner)
    return graph


def cycles(graph):
    """Tarjan's strongly connected components; each one of two or more files is a cycle."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    res = []
    for comp in out:
        edges = ["%s -> %s" % (a, b) for a in comp for b in sorted(graph.get(a, ())) if b in comp]
        res.append("cycle among %s: %s" % (", ".join(comp), "; ".join(edges)))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    files = list(sources())
    problems = long_files(files) + long_functions(files)
    if not os.path.isdir(args.build):
        sys.exit("check-structure: no build directory %s: build first (make build)" % args.build)
    graph = symbol_graph(args.build)
    if not graph:
        sys.exit("check-structure: no objects found under %s: build first (make build)" % args.build)
    problems += cycles(graph)
    for p in problems:
        print(p)
    print("check-structure: %d files, %d file-to-file edges, %d findings" %
          (len(files), sum(len(v) for v in graph.values()), len(problems)))
    return 0 if args.report or not problems else 1


if __name__ == "__main__":
    sys.exit(main())

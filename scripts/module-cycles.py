#!/usr/bin/env python3
"""Finds import circles between the top-level modules of each crate (`crate::a` used in
module `b` and `crate::b` in `a`, directly or around a longer loop) and exits 1 if any.
Top-level module = the first path component under `src/`; `lib.rs`/`main.rs` are the root,
which may use everything. Comment lines are ignored (doc links are not imports).

    scripts/module-cycles.py            # every crate under crates/
    scripts/module-cycles.py -v crates/kiln-services   # also print each module's imports
"""
import os
import re
import sys


def imports(src):
    mods = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)
            top = rel.split("/")[0].removesuffix(".rs")
            with open(os.path.join(src, rel)) as f:
                code = "\n".join(l for l in f if not l.strip().startswith("//"))
            deps = set(re.findall(r"crate::(\w+)", code))
            for group in re.findall(r"crate::\{([^}]*)\}", code, re.S):
                for part in group.split(","):
                    part = part.strip()
                    if part:
                        deps.add(re.split(r"::|\s", part)[0])
            mods.setdefault(top, set()).update(d for d in deps if d != top)
    for root in ("lib", "main"):
        mods.pop(root, None)
    return mods


def circles(mods):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in mods.get(v, ()):
            if w not in mods:
                continue
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
                found.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def main():
    verbose = "-v" in sys.argv
    crates = [a for a in sys.argv[1:] if a != "-v"]
    if not crates:
        crates = sorted(os.path.join("crates", c) for c in os.listdir("crates"))
    bad = False
    for crate in crates:
        src = os.path.join(crate, "src")
        if not os.path.isdir(src):
            continue
        mods = imports(src)
        if verbose:
            for m in sorted(mods):
                print(f"{crate}: {m} -> {', '.join(sorted(mods[m]))}")
        for comp in circles(mods):
            bad = True
            print(f"{crate}: import circle between {', '.join(comp)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

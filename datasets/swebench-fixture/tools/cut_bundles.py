"""Cuts each repository down to the trees the fixture's records name.

For every commit a record names (base_commit, environment_setup_commit), a new commit with the
same tree, author, committer and message (plus an `Upstream-Commit:` trailer) is made; they are
chained oldest first, so the bundle is one connected history with no prerequisites. Each new
commit also gets the upstream commit's nearest tag (versions computed by setuptools_scm). The records
get the new hashes; the upstream ones stay in `upstream_base_commit` /
`upstream_environment_setup_commit`.
"""
import json, os, subprocess, sys, tempfile, collections

recs_in, out_dir, mirrors = sys.argv[1], sys.argv[2], sys.argv[3]
recs = [json.loads(l) for l in open(recs_in)]
need = collections.defaultdict(set)
for r in recs:
    need[r["repo"]] |= {r["base_commit"], r["environment_setup_commit"]}

def git(gd, *args, env=None, inp=None):
    return subprocess.run(["git", "--git-dir", gd, *args], check=True, capture_output=True,
                          text=True, env=env, input=inp).stdout.strip()

mapping = {}
for repo, commits in sorted(need.items()):
    mirror = os.path.join(mirrors, repo.replace("/", "+"), "repo")
    work = tempfile.mkdtemp()
    gd = os.path.join(work, "r.git")
    subprocess.run(["git", "init", "-q", "--bare", gd], check=True)
    open(os.path.join(gd, "objects/info/alternates"), "w").write(os.path.join(mirror, "objects") + "\n")
    dated = sorted(commits, key=lambda c: int(git(gd, "show", "-s", "--format=%ct", c)))
    parent = None
    for c in dated:
        fmt = git(gd, "show", "-s", "--format=%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI", c).split("\x00")
        msg = git(gd, "show", "-s", "--format=%B", c)
        env = dict(os.environ, GIT_AUTHOR_NAME=fmt[0], GIT_AUTHOR_EMAIL=fmt[1], GIT_AUTHOR_DATE=fmt[2],
                   GIT_COMMITTER_NAME=fmt[3], GIT_COMMITTER_EMAIL=fmt[4], GIT_COMMITTER_DATE=fmt[5])
        args = ["commit-tree", c + "^{tree}"] + (["-p", parent] if parent else [])
        new = git(gd, *args, env=env, inp=f"{msg}\n\nUpstream-Commit: {c}\n")
        mapping[c] = new
        parent = new
        # The nearest upstream tag, on the rewritten commit: setuptools_scm derives the
        # package version from it (pytest's own `minversion` check needs a real version).
        tag = subprocess.run(["git", "--git-dir", mirror, "describe", "--tags", "--abbrev=0", c],
                             capture_output=True, text=True).stdout.strip()
        if tag and subprocess.run(["git", "--git-dir", gd, "rev-parse", "-q", "--verify",
                                   f"refs/tags/{tag}"], capture_output=True).returncode != 0:
            git(gd, "tag", tag, new)
    git(gd, "update-ref", "refs/heads/main", parent)
    name = repo.split("/")[1]
    # A self-contained pack: repack without the alternate, then bundle.
    subprocess.run(["git", "--git-dir", gd, "repack", "-a", "-d", "-q"], check=True)
    os.remove(os.path.join(gd, "objects/info/alternates"))
    git(gd, "fsck", "--connectivity-only")
    out = os.path.join(out_dir, f"{name}.bundle")
    git(gd, "bundle", "create", "-q", out, "refs/heads/main", "--tags")
    print(repo, len(dated), os.path.getsize(out) // 1024, "KiB", file=sys.stderr)

for r in recs:
    r["upstream_base_commit"] = r["base_commit"]
    r["upstream_environment_setup_commit"] = r["environment_setup_commit"]
    r["base_commit"] = mapping[r["base_commit"]]
    r["environment_setup_commit"] = mapping[r["environment_setup_commit"]]
    print(json.dumps(r))

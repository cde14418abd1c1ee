#!/usr/bin/env python3
"""Plants one bug at a time in sellsync-model, runs the convergence property against it, and
reverts. Each planted bug must make the property fail: an oracle that passes on a planted bug
cannot fail. Usage: python3 scripts/planted-model.py [NAME...] (default: all). Run from the repo
root with a clean crates/model/src; it restores every file it touched."""
import pathlib, subprocess, sys, os

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "crates/model/src"

# name: (file, text to replace, replacement, what the bug is)
BUGS = {
    "local-wins": ("project.rs",
        "        let outcome = resolve_outcome(tier, &candidates);\n",
        "        let mut outcome = resolve_outcome(tier, &candidates);\n"
        "        if let Outcome::Auto(_) = outcome\n"
        "            && let Some(i) = candidates.iter().position(|c| crate::doc::actor_of(&c.reg.device) == *self.doc.get_actor())\n"
        "        {\n            outcome = Outcome::Auto(i);\n        }\n",
        "an automatic resolution prefers the value written by the replica's own device"),
    "tags-drop-concurrent": ("project.rs",
        "                tags: snap.tags.keys().cloned().collect(),",
        "                tags: snap.tags.iter().filter(|(_, v)| v.len() == 1).map(|(k, _)| k.clone()).collect(),",
        "a tag added concurrently on two replicas reads as absent"),
    "splice-drops-char": ("edit.rs",
        "                            insert: insert.clone(),\n                        });\n                    }\n                }\n                Edit::SetNoteText",
        "                            insert: insert.chars().skip(1).collect(),\n                        });\n                    }\n                }\n                Edit::SetNoteText",
        "a note splice inserts all but the first character"),
    "activity-lost": ("project.rs",
        "    snap.activities\n        .iter()\n        .map(|(id, a)| {",
        "    snap.activities\n        .iter()\n        .skip(1)\n        .map(|(id, a)| {",
        "the projection leaves out the first activity"),
    "edit-undoes-delete": ("project.rs",
        "        } else if !restores.is_empty() || unseen > 0 {",
        "        } else if unseen > 0 {\n            RecordState::Live\n        } else if !restores.is_empty() {",
        "an edit concurrent with a delete silently restores the record"),
    "no-audit-before-overwrite": ("edit.rs",
        "            plan.push(Planned::Audit(entry));",
        "            let _ = entry;",
        "an edit that supersedes an automatically resolved field skips recording its losers"),
}

def run(name):
    file, old, new, what = BUGS[name]
    path = SRC / file
    original = path.read_text()
    try:
        assert old in original, f"{name}: anchor not found in {file}"
        planted = original.replace(old, new, 1)
        assert planted != original
        path.write_text(planted)
        env = dict(os.environ, PROPTEST_CASES=os.environ.get("PROPTEST_CASES", "256"))
        r = subprocess.run(["cargo", "test", "-q", "-p", "sellsync-model", "--test", "convergence"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        out = r.stdout + r.stderr
        if "could not compile" in out:
            return name, what, "DID NOT COMPILE", out[-3000:]
        caught = r.returncode != 0
        reason = ""
        if "Test failed:" in out:
            tail = out[out.index("Test failed:"):]
            end = tail.find(" at crates/")
            reason = " ".join(tail[: end if end > 0 else 300].split())
            if len(reason) > 220:
                reason = reason[:100] + " ... " + reason[-110:]
        return name, what, "caught" if caught else "NOT CAUGHT", reason[:300]
    finally:
        path.write_text(original)

names = sys.argv[1:] or list(BUGS)
failed = False
for n in names:
    name, what, verdict, reason = run(n)
    print(f"{name}: {what}: {verdict}\n    {reason}")
    failed |= verdict != "caught"
sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""Plants one bug at a time in product code, runs the whole-system simulation against it, and
reverts. Each planted bug must make the simulation fail, and the invariant named for it must be
among those that fired: an invariant that passes on its planted bug cannot fail. Usage:
python3 scripts/planted-system.py [NAME...] (default: all). Run from the repo root with a clean
tree; it restores every file it touched, also on Ctrl-C. SELLSYNC_SIM_CASES (default 12) and
SELLSYNC_SIM_STEPS (default 60) set the run, as for the test itself."""
import os, pathlib, re, signal, subprocess, sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# name: (file, text to replace, replacement, what the bug is, invariant expected to catch it)
BUGS = {
    "local-wins": ("crates/model/src/project.rs",
        "        let outcome = resolve_outcome(tier, &candidates);\n",
        "        let mut outcome = resolve_outcome(tier, &candidates);\n"
        "        if let Outcome::Auto(_) = outcome\n"
        "            && let Some(i) = candidates.iter().position(|c| crate::doc::actor_of(&c.reg.device) == *self.doc.get_actor())\n"
        "        {\n            outcome = Outcome::Auto(i);\n        }\n",
        "an automatic resolution prefers the value written by the replica's own device",
        "convergence"),
    "push-skips-name": ("crates/bridge/src/mapping.rs",
        "        let v = to_wire(value)?;\n",
        "        let v = to_wire(value)?;\n        if *key == FieldKey::std(\"name\") { continue; }\n",
        "the bridge never sends a record's name",
        "zendesk agrees"),
    "inbox-empty": ("crates/service/src/node.rs",
        "                w.set_conflicts(id, view.as_deref())?;\n",
        "                w.set_conflicts(id, view.as_deref().filter(|_| false))?;\n",
        "a node never writes a record's conflicts into its inbox view",
        "no wedge"),
    "keep-revoked": ("crates/service/src/node.rs",
        "            if self.replica.docs().kind(id)?.is_none() || id.as_str() == CATALOG_ID {\n",
        "            if self.replica.docs().kind(id)?.is_some() || id.as_str() == CATALOG_ID {\n",
        "a device keeps a record whose access was revoked, unflagged (it goes on syncing it)",
        "access"),
    "drop-notification": ("crates/service/src/node.rs",
        "                for n in &p.notifications {\n",
        "                for n in p.notifications.iter().skip(1) {\n",
        "a record's first notification is never stored",
        "notifications"),
    "panic-on-crm-text": ("crates/bridge/src/mapping.rs",
        "        let v = lookup(obj, name).unwrap_or(&Json::Null);\n",
        "        let v = lookup(obj, name).unwrap_or(&Json::Null);\n"
        "        assert!(!v.as_str().is_some_and(|s| s.starts_with(\"Web \")), \"unexpected text\");\n",
        "the bridge panics on a text the CRM sends (a web-app rename), under the hub's lock",
        "no panic"),
    "reopen-drops-new-records": ("crates/service/src/node.rs",
        "        node.reload_catalog()?;\n        Ok(node)\n",
        "        node.reload_catalog()?;\n"
        "        if node.identity.role == Role::Device {\n"
        "            let lost: Vec<RecordId> = node.records()?.into_iter().map(|(id, _)| id)\n"
        "                .filter(|id| id.as_str().starts_with(\"d-new-\")).collect();\n"
        "            node.store().write(|w| { for id in &lost { w.remove_doc(id)?; } Ok(()) })?;\n"
        "        }\n"
        "        Ok(node)\n",
        "a device that reopens its store drops the deals it created (as a careless repair would)",
        "no lost update"),
    "accept-forgery": ("crates/service/src/signed.rs",
        "            check_change(\n                doc,\n",
        "            (|_: &Automerge, _: &Change, _: ChangeAuthor<'_>| Ok(Vec::new()))(\n                doc,\n",
        "the hub and LAN peers take any signed change, whatever it writes (no write rules)",
        "authorship"),
}

originals = {}

def restore():
    for path, text in originals.items():
        path.write_text(text)
    originals.clear()

def on_signal(sig, frame):
    restore()
    sys.exit(130)

signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

def run(name):
    file, old, new, what, expect = BUGS[name]
    path = ROOT / file
    original = path.read_text()
    originals[path] = original
    try:
        assert old in original, f"{name}: anchor not found in {file}"
        path.write_text(original.replace(old, new, 1))
        env = dict(os.environ,
                   SELLSYNC_SIM_CASES=os.environ.get("SELLSYNC_SIM_CASES", "12"),
                   SELLSYNC_SIM_SHRINK=os.environ.get("SELLSYNC_SIM_SHRINK", "0"))
        r = subprocess.run(["cargo", "test", "-q", "-p", "sellsync-simtest", "--test", "system"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        out = r.stdout + r.stderr
        if "could not compile" in out:
            return what, expect, "DID NOT COMPILE", out[-3000:]
        fired = sorted(set(re.findall(r"^  (convergence|zendesk agrees|no wedge|access|notifications|no panic|no poisoned lock|authorship|no lost update): ", out, re.M)))
        seed = re.search(r"seed (\d+) failed", out)
        first = re.search(r"^seed \d+ failed:\n  (.*)$", out, re.M)
        detail = f"seed {seed.group(1) if seed else '?'}; fired: {', '.join(fired) or '-'}"
        if first:
            detail += f"\n    first: {first.group(1)[:200]}"
        if r.returncode == 0:
            return what, expect, "NOT CAUGHT", detail
        return what, expect, "caught" if expect in fired else f"FAILED, BUT NOT BY {expect}", detail
    finally:
        restore()

names = sys.argv[1:] or list(BUGS)
failed = False
for n in names:
    what, expect, verdict, detail = run(n)
    print(f"{n}: {what}: {verdict} (expected: {expect})\n    {detail}", flush=True)
    failed |= verdict != "caught"
sys.exit(1 if failed else 0)

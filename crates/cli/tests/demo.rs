//! `sellsync demo` end to end (simulator, hub, bridge, two devices over loopback), and the
//! same story under injected faults: the final Zendesk state must be the fault-free one.

use std::process::Command;

fn demo(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sellsync"))
        .arg("demo")
        .args(args)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "demo {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn the_demo_tells_the_whole_story_and_exits_0() {
    let (out, _) = demo(&[]);
    for line in [
        "merged by themselves: tags {",
        "CONFLICT on value (manual tier)",
        "CONFLICT on stage_id (manual tier)",
        "notify tier: estimated_close_date resolved to 2027-03-01",
        "value [manual] chose 17500.00 by Bea Berg",
        "laptop syncs: same deal, no conflicts, value 17500.00",
        "Nothing was lost",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn under_20_percent_faults_zendesk_ends_as_without_faults() {
    let (clean, _) = demo(&["--json"]);
    let clean: serde_json::Value = serde_json::from_str(&clean).expect("json");
    assert_eq!(clean["deal"]["value"], 17500);
    assert!(clean["account"]["deals"].as_u64().unwrap() >= 50);
    for seed in ["1", "2", "3"] {
        let (faulty, story) = demo(&["--json", "--faults", "0.2", "--seed", seed]);
        let faulty: serde_json::Value = serde_json::from_str(&faulty).expect("json");
        assert!(story.contains("It fails 20% of requests"), "{story}");
        // Same record, same notes and tasks, and no duplicate anywhere in the account.
        assert_eq!(faulty, clean, "seed {seed}:\n{story}");
    }
}

#[test]
fn bad_demo_options_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_sellsync"))
        .args(["demo", "--faults", "1.5"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number from 0 to 1"));
}

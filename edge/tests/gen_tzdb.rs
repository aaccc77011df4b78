//! scripts/gen-tzdb.sh: zones whose POSIX rule disagrees with their own zone
//! data carry explicit offset changes, and a zone that starts to disagree
//! stops the generator.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SYSTEM: &str = "/usr/share/zoneinfo";

/// A zoneinfo directory holding the system's `Europe/Berlin` and its
/// `Africa/Casablanca` under `ramadan_as`.
fn zoneinfo(dir: &Path, ramadan_as: &str) {
    let _ = std::fs::remove_dir_all(dir);
    for (from, to) in [
        ("tzdata.zi", "tzdata.zi"),
        ("Europe/Berlin", "Europe/Berlin"),
        ("Africa/Casablanca", ramadan_as),
    ] {
        let to = dir.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(SYSTEM).join(from), to).unwrap();
    }
}

fn generate(tzdir: &Path, out: &Path) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-tzdb.sh");
    Command::new("bash")
        .arg(script)
        .arg(out)
        .env("TZDIR", tzdir)
        .output()
        .unwrap()
}

#[test]
fn a_zone_that_starts_to_disagree_with_its_rule_stops_the_generator() {
    let base = std::env::temp_dir().join(format!("vigil-gen-tzdb-{}", std::process::id()));
    let (tzdir, out) = (base.join("zoneinfo"), base.join("tzdb.rs"));

    // Morocco's data under a name the generator does not know disagrees.
    zoneinfo(&tzdir, "Test/Ramadan");
    let run = generate(&tzdir, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("Test/Ramadan"), "{stderr}");
    assert!(!stderr.contains("Europe/Berlin"), "{stderr}");
    assert!(!out.exists(), "nothing written");

    // Under its own name it is carried with its changes, and the result is
    // what the committed table holds.
    zoneinfo(&tzdir, "Africa/Casablanca");
    let run = generate(&tzdir, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let generated = std::fs::read_to_string(&out).unwrap();
    let committed =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/core/tzdb.rs"))
            .unwrap();
    let line = |text: &str, start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} in\n{text}"))
            .to_string()
    };
    for start in [
        // The zones' text (`name rule` lines) and the explicit changes' table.
        "Africa/Casablanca ",
        "Europe/Berlin ",
        "    (\"Africa/Casablanca\", ",
        "const CHANGES_0",
        "pub const EXPLICIT_UNTIL_MIN",
    ] {
        assert_eq!(line(&generated, start), line(&committed, start));
    }
    assert!(!generated.contains("CHANGES_1"), "one zone, one list");
    let _ = std::fs::remove_dir_all(&base);
}

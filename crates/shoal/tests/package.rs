//! `scripts/package.sh` makes a .deb (cargo-deb) of the binaries this test run built:
//! `dpkg-deb -c` lists both binaries, the systemd unit, the man pages and the completions,
//! and it installs with `dpkg --root` into a directory of its own (never on the machine),
//! where the installed binaries run and the unit reads as written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SHOAL, text};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_deb_holds_everything_and_installs_into_a_root_of_its_own() {
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: run scripts/setup.sh (it installs cargo-deb)"
    );
    // The binaries this run built: target/debug/shoal and shoald.
    let bin_dir = Path::new(SHOAL).parent().unwrap();
    let target = bin_dir.parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let printed = run(Command::new(workspace().join("scripts/package.sh"))
        .args(["--profile", "dev", "--no-build", "--out"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", target));
    let debs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}; package.sh printed {printed}");
    let deb = &debs[0];
    assert!(
        printed.trim_end().ends_with(&*deb.to_string_lossy()),
        "{printed}"
    );

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in [
        "./usr/bin/shoal",
        "./usr/bin/shoald",
        "./lib/systemd/system/shoald.service",
        "./usr/share/man/man1/shoal.1.gz",
        "./usr/share/man/man1/shoal-events.1.gz",
        "./usr/share/man/man1/shoal-service-create.1.gz",
        "./usr/share/man/man8/shoald.8.gz",
        "./usr/share/bash-completion/completions/shoal",
        "./usr/share/zsh/vendor-completions/_shoal",
        "./usr/share/fish/vendor_completions.d/shoal.fish",
    ] {
        assert!(
            paths.contains(&want),
            "{want} not in the package:\n{listing}"
        );
    }
    let fields = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .args(["Package", "Depends", "Section"]));
    assert!(fields.contains("Package: shoal\n"), "{fields}");
    assert!(
        fields.contains("runc") && fields.contains("nftables"),
        "{fields}"
    );
    // No maintainer scripts: installing starts nothing.
    let control = run(Command::new("dpkg-deb").args(["-I"]).arg(deb));
    for script in ["postinst", "prerm", "postrm", "preinst"] {
        assert!(!control.contains(script), "{script} in:\n{control}");
    }

    // Installed into a root of its own: dpkg's database there, its log there too.
    let root = tempfile::tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    for d in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    let log = root.path().join("dpkg.log");
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("--log={}", log.display()))
        // runc, nftables and iproute2 are not in this root's (empty) database.
        .args(["--force-depends", "-i"])
        .arg(deb));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["-s", "shoal"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let installed = root.path().join("usr/bin");
    let version = run(Command::new(installed.join("shoald")).arg("--version"));
    assert!(version.starts_with("shoald "), "{version}");
    let help = run(Command::new(installed.join("shoal")).arg("--help"));
    assert!(
        help.contains("events") && help.contains("completion"),
        "{help}"
    );
    let unit =
        std::fs::read_to_string(root.path().join("lib/systemd/system/shoald.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/shoald",
        "KillMode=process",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} not in:\n{unit}");
    }
    // systemd reads the unit without a complaint (it says nothing of a key it does not know
    // or a value it cannot parse but on stderr), its ExecStart pointed into the root.
    let check = root.path().join("shoald.service");
    let installed_shoald = installed.join("shoald");
    std::fs::write(
        &check,
        unit.replace(
            "ExecStart=/usr/bin/shoald",
            &format!("ExecStart={}", installed_shoald.display()),
        ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&check)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify.stderr)
    );
    // The installed man page reads, from where man finds it.
    let page = run(Command::new("man")
        .arg("-l")
        .arg(root.path().join("usr/share/man/man8/shoald.8.gz"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat"));
    assert!(page.contains("--advertise-addr"), "{page}");
}

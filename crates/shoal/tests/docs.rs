//! `shoal completion` and `shoal gen-man` with the real tools: the bash script loads in
//! bash and completes subcommands and flags, the zsh and fish scripts are theirs, and the
//! man pages render with `man -l` naming the subcommands (shoald's too).

mod common;

use std::process::Command;

use common::{SHOAL, text};

/// Completions bash offers for the words of `line` (the last being completed), with the
/// script `shoal completion bash` printed loaded into it.
fn complete(line: &str) -> Vec<String> {
    let script = Command::new(SHOAL)
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success(), "{}", text(&script.stderr));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // COMP_* as bash sets them for a completion function, then the function itself.
    let words: Vec<&str> = line.split(' ').collect();
    let prog = format!(
        "source {path}
complete -p shoal || exit 3
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT={point}
_shoal shoal '{cur}' '{prev}'
printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path = path.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        point = line.len(),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let registered = lines.next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ") && registered.ends_with(" shoal"),
        "{registered}"
    );
    lines.map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(complete("shoal serv"), ["service"]);
    let service = complete("shoal service cr");
    assert_eq!(service, ["create"]);
    let events = complete("shoal events --s");
    assert_eq!(events, ["--since"]);
    let shells = complete("shoal completion f");
    assert_eq!(shells, ["fish"]);
    assert_eq!(complete("shoal node ls --fo"), ["--format"]);
}

#[test]
fn zsh_and_fish_scripts_name_the_command() {
    let zsh = Command::new(SHOAL)
        .args(["completion", "zsh"])
        .output()
        .unwrap();
    assert!(
        text(&zsh.stdout).starts_with("#compdef shoal"),
        "{}",
        text(&zsh.stdout)
    );
    let fish = Command::new(SHOAL)
        .args(["completion", "fish"])
        .output()
        .unwrap();
    assert!(
        text(&fish.stdout)
            .contains("complete -c shoal -n \"__fish_shoal_needs_command\" -f -a \"events\""),
        "{}",
        text(&fish.stdout)
    );
    let bad = Command::new(SHOAL)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("invalid value 'tcsh'"),
        "{}",
        text(&bad.stderr)
    );
}

fn man(page: &std::path::Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "man -l {}: {}",
        page.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn man_pages_render_and_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SHOAL)
        .arg("gen-man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shoal = man(&dir.path().join("shoal.1"));
    assert!(
        shoal.contains("shoal - Services, overlay networks and load balancing"),
        "{shoal}"
    );
    let subcommands = shoal
        .split("SUBCOMMANDS")
        .nth(1)
        .expect("a SUBCOMMANDS section");
    for sub in [
        "shoal-init(1)",
        "shoal-service(1)",
        "shoal-node(1)",
        "shoal-events(1)",
        "shoal-completion(1)",
    ] {
        assert!(subcommands.contains(sub), "{sub} not in:\n{shoal}");
    }
    assert!(!shoal.contains("gen-man"), "{shoal}");
    let events = man(&dir.path().join("shoal-events.1"));
    for flag in ["--since", "--until", "--filter", "--format"] {
        assert!(events.contains(flag), "{flag} not in:\n{events}");
    }
    let create = man(&dir.path().join("shoal-service-create.1"));
    assert!(create.contains("--replicas"), "{create}");
    let shoald = man(&dir.path().join("shoald.8"));
    assert!(shoald.contains("shoald - The shoal daemon"), "{shoald}");
    assert!(shoald.contains("--data-dir"), "{shoald}");
}

//! Shell completion scripts: generated for bash, zsh and fish, and one a real bash
//! loads.

mod common;

use std::process::Command;

use common::BIN;

fn completion(shell: &str) -> String {
    let out = Command::new(BIN).args(["completion", shell]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completion_scripts_name_the_commands_and_bash_loads_its_own() {
    let bash = completion("bash");
    for word in ["deploy", "logs", "secret", "--namespace"] {
        assert!(bash.contains(word), "bash script lacks {word}");
    }
    assert!(completion("zsh").starts_with("#compdef updraft"));
    assert!(completion("fish").contains("complete -c updraft"));

    let loaded = Command::new("bash")
        .args(["-c", &format!("source <({BIN} completion bash) && complete -p updraft")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("updraft"),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );

    let out = Command::new(BIN).args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

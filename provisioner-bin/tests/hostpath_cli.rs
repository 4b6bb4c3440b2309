//! `hostpath-provisioner` on the command line, without a cluster: what an operator sees when
//! a setting or the config is wrong, and the `explain` subcommand.

use std::path::Path;
use std::process::{Command, Output};

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostpath-provisioner"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // No cluster: a client must never be found by accident.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run hostpath-provisioner")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn without_node_name_it_says_how_to_set_it() {
    let output = run(&[], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("NODE_NAME"), "{message}");
    assert!(message.contains("--node-name"), "{message}");
    assert!(message.contains("spec.nodeName"), "{message}");
}

#[test]
fn an_invalid_setting_is_named_with_its_variable_and_flag() {
    let output = run(
        &[("NODE_NAME", "node-a"), ("NODE_GONE_POLICY", "shred")],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("NODE_GONE_POLICY"), "{message}");
    assert!(message.contains("--node-gone-policy"), "{message}");
    assert!(message.contains("shred"), "{message}");
}

#[test]
fn an_invalid_config_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["relative/path"]}]}"#,
    )
    .unwrap();
    let output = run(
        &[("NODE_NAME", "node-a")],
        &[&format!("--config={}", config.display())],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&config.display().to_string()), "{message}");
    assert!(message.contains("relative/path"), "{message}");
}

#[test]
fn a_missing_config_is_named() {
    let output = run(
        &[("NODE_NAME", "node-a")],
        &["--config=/nonexistent/config.json"],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("/nonexistent/config.json"), "{message}");
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let output = run(&[], &["--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "NODE_NAME",
        "CONFIG_PATH",
        "PROVISIONER_NAME",
        "PROVISIONER_ALIASES",
        "NODE_GONE_POLICY",
        "RESERVED_SPACE",
        "FS_TIMEOUT",
        "explain",
    ] {
        assert!(
            help.contains(name),
            "--help does not mention {name}:\n{help}"
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn explain_answers_from_manifests() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "claim.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default, uid: c-1}\n\
         spec: {storageClassName: local-path, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    write(
        dir.path(),
        "volumes.yaml",
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: small}\n\
         spec: {storageClassName: local-path, accessModes: [ReadWriteOnce], capacity: {storage: 1Mi}}\n\
         status: {phase: Available}\n",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_hostpath-provisioner"))
        .current_dir(dir.path())
        .args([
            "explain",
            "--claim=claim.yaml",
            "--volumes=volumes.yaml",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    // Answered: no volume fits, with the reason for the one there is.
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(answer["chosen"].is_null(), "{answer}");
    assert_eq!(answer["rejected"][0]["volume"], "small", "{answer}");
}

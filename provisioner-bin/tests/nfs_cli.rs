//! `nfs-provisioner`'s configuration as an operator meets it: environment variables of the
//! Go image, flags, and the errors when something is missing (no cluster needed: the
//! configuration is checked before anything connects).

use std::process::{Command, Output};

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nfs-provisioner"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run nfs-provisioner")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const SEED_ENV: [(&str, &str); 3] = [
    ("PROVISIONER_NAME", "nfs-test"),
    ("NFS_SERVER", "127.0.0.1"),
    ("NFS_PATH", "/shared"),
];

#[test]
fn without_configuration_it_names_the_variable_and_the_flag_and_fails() {
    let output = run(&[], &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("PROVISIONER_NAME") && message.contains("--provisioner-name"),
        "{message}"
    );
}

#[test]
fn each_required_variable_is_asked_for_in_turn() {
    for missing in ["PROVISIONER_NAME", "NFS_SERVER", "NFS_PATH"] {
        let env: Vec<_> = SEED_ENV
            .iter()
            .copied()
            .filter(|(key, _)| *key != missing)
            .collect();
        let output = run(&env, &[]);
        assert!(!output.status.success(), "{missing}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("{missing} is not set")),
            "{message}"
        );
    }
}

#[test]
fn an_invalid_value_is_quoted_with_its_variable() {
    let mut env = SEED_ENV.to_vec();
    env.push(("NFS_ACCESS", "nfs4"));
    let output = run(&env, &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("NFS_ACCESS")
            && message.contains("\"nfs4\"")
            && message.contains("direct"),
        "{message}"
    );

    let env = [
        ("PROVISIONER_NAME", "nfs-test"),
        ("NFS_SERVER", "127.0.0.1"),
        ("NFS_PATH", "shared"),
    ];
    let message = stderr(&run(&env, &[]));
    assert!(
        message.contains("NFS_PATH") && message.contains("absolute"),
        "{message}"
    );
}

#[test]
fn a_flag_replaces_a_missing_variable() {
    // With every NFS setting given by flags, the configuration passes and the binary goes
    // on to the cluster connection, which fails here: no kubeconfig, no in-cluster config.
    let output = run(
        &[("HOME", "/nonexistent")],
        &[
            "--provisioner-name=nfs-test",
            "--nfs-server=127.0.0.1",
            "--nfs-path=/shared",
            "--metrics-address=127.0.0.1:0",
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(!message.contains("is not set:"), "{message}");
}

#[test]
fn help_documents_every_setting_with_its_variable() {
    let output = run(&[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for documented in [
        "PROVISIONER_NAME",
        "PROVISIONER_ALIASES",
        "NFS_SERVER",
        "NFS_PATH",
        "NFS_ACCESS",
        "NFS_MOUNT_ROOT",
        "/persistentvolumes",
        "NFS_PORT",
        "NFS_MOUNT_PORT",
        "NFS_OPERATION_TIMEOUT",
        "LEGACY_DELETE_POLICY",
        "ENABLE_LEADER_ELECTION",
        "POD_NAMESPACE",
        "--kubeconfig",
        "KUBECONFIG",
        "--metrics-address",
        "explain",
    ] {
        assert!(
            help.contains(documented),
            "--help lacks {documented}:\n{help}"
        );
    }
}

//! `nfs-provisioner explain` as an operator runs it: files in, one answer out.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn explain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nfs-provisioner"))
        .current_dir(dir)
        .arg("explain")
        .args(args)
        .output()
        .expect("run nfs-provisioner")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default, uid: c-1}
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Gi}}
"#;

fn pv(name: &str, class: &str, modes: &str, size: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec: {{storageClassName: {class}, accessModes: [{modes}], capacity: {{storage: {size}}}{extra}}}\nstatus: {{phase: Available}}\n"
    )
}

#[test]
fn json_names_the_smallest_fit_in_the_smallest_mode_set_and_a_reason_for_every_other() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "claim.yaml", CLAIM);
    let volumes = [
        pv("too-small", "fast", "ReadWriteOnce", "10G", ""),
        pv(
            "wider-modes",
            "fast",
            "ReadWriteOnce, ReadWriteMany",
            "10Gi",
            "",
        ),
        pv("big", "fast", "ReadWriteOnce", "50Gi", ""),
        pv("fits", "fast", "ReadWriteOnce", "20Gi", ""),
        pv("other-class", "slow", "ReadWriteOnce", "10Gi", ""),
    ]
    .concat();
    write(dir.path(), "pvs.yaml", &volumes);

    let output = explain(
        dir.path(),
        &[
            "--claim",
            "claim.yaml",
            "--volumes",
            "pvs.yaml",
            "-o",
            "json",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let answer = json(&output);
    assert_eq!(answer["chosen"], "fits");
    assert_eq!(answer["error"], Value::Null);
    let rejected: Vec<&str> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["volume"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ["too-small", "wider-modes", "big", "other-class"]);
    let object = answer.as_object().unwrap();
    assert_eq!(object.len(), 3, "exactly chosen, rejected, error: {answer}");
}

#[test]
fn wait_for_first_consumer_binds_only_a_prebound_volume() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "claim.yaml", CLAIM);
    let volumes = [
        pv("free", "fast", "ReadWriteOnce", "10Gi", ""),
        pv(
            "reserved",
            "fast",
            "ReadWriteOnce, ReadWriteMany",
            "20Gi",
            ", claimRef: {namespace: default, name: data}",
        ),
    ]
    .concat();
    write(dir.path(), "pvs.yaml", &volumes);

    let args = [
        "--claim",
        "claim.yaml",
        "--volumes",
        "pvs.yaml",
        "-o",
        "json",
    ];
    // Immediate binding: the RWO set is searched first and its free volume wins over the
    // volume pre-bound in the wider RWO,RWX set.
    let immediate = json(&explain(dir.path(), &args));
    assert_eq!(immediate["chosen"], "free", "{immediate}");

    // WaitForFirstConsumer: the PV controller binds only the pre-bound volume.
    let mut delayed_args = args.to_vec();
    delayed_args.push("--wait-for-first-consumer");
    let delayed = json(&explain(dir.path(), &delayed_args));
    assert_eq!(delayed["chosen"], "reserved", "{delayed}");
}

#[test]
fn a_node_selects_the_scheduler_search_and_its_affinity() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "claim.yaml", CLAIM);
    let affinity = |zone: &str| {
        format!(
            ", nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: zone, operator: In, values: [{zone}]}}]}}]}}}}"
        )
    };
    let volumes = [
        pv("zone-a", "fast", "ReadWriteOnce", "10Gi", &affinity("a")),
        pv("zone-b", "fast", "ReadWriteOnce", "10Gi", &affinity("b")),
        pv(
            "zone-b-taken",
            "fast",
            "ReadWriteOnce",
            "10Gi",
            &affinity("b"),
        ),
    ]
    .concat();
    write(dir.path(), "pvs.yaml", &volumes);
    write(
        dir.path(),
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: b}}\n",
    );
    let answer = json(&explain(
        dir.path(),
        &[
            "--claim",
            "claim.yaml",
            "--volumes",
            "pvs.yaml",
            "--node",
            "node.yaml",
            "--exclude",
            "zone-b",
            "-o",
            "json",
        ],
    ));
    assert_eq!(answer["chosen"], "zone-b-taken", "{answer}");
}

#[test]
fn a_claim_naming_its_volume_takes_the_named_volume_path() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "claim.yaml",
        &CLAIM.replace(
            "storageClassName: fast",
            "storageClassName: fast\n  volumeName: big",
        ),
    );
    let volumes = [
        pv("fits", "fast", "ReadWriteOnce", "10Gi", ""),
        pv("big", "fast", "ReadWriteOnce", "5Gi", ""),
    ]
    .concat();
    write(dir.path(), "pvs.yaml", &volumes);
    let output = explain(
        dir.path(),
        &[
            "--claim",
            "claim.yaml",
            "--volumes",
            "pvs.yaml",
            "-o",
            "json",
        ],
    );
    let answer = json(&output);
    assert_eq!(answer["chosen"], Value::Null, "{answer}");
    let big = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["volume"] == "big")
        .unwrap();
    assert!(big["reason"].as_str().unwrap().contains("5Gi"), "{big}");
}

#[test]
fn bad_input_names_the_file_and_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "claim.yaml", &CLAIM.replace("10Gi", "10 gigs"));
    write(
        dir.path(),
        "pvs.yaml",
        &pv("a", "fast", "ReadWriteOnce", "1Gi", ""),
    );

    let output = explain(
        dir.path(),
        &[
            "--claim",
            "claim.yaml",
            "--volumes",
            "pvs.yaml",
            "-o",
            "json",
        ],
    );
    assert!(!output.status.success());
    let answer = json(&output);
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("spec.resources.requests.storage"), "{error}");
    assert_eq!(answer["chosen"], Value::Null);

    let output = explain(
        dir.path(),
        &["--claim", "pvs.yaml", "--volumes", "pvs.yaml"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pvs.yaml") && stderr.contains("expected a PersistentVolumeClaim"),
        "{stderr}"
    );

    let output = explain(
        dir.path(),
        &["--claim", "missing.yaml", "--volumes", "pvs.yaml"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read missing.yaml"));
}

#[test]
fn an_invalid_selector_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "claim.yaml",
        &format!("{CLAIM}  selector: {{matchExpressions: [{{key: tier, operator: In}}]}}\n"),
    );
    write(
        dir.path(),
        "pvs.yaml",
        &pv("a", "fast", "ReadWriteOnce", "10Gi", ""),
    );
    let output = explain(
        dir.path(),
        &[
            "--claim",
            "claim.yaml",
            "--volumes",
            "pvs.yaml",
            "-o",
            "json",
        ],
    );
    assert!(!output.status.success());
    let answer = json(&output);
    assert!(
        answer["error"].as_str().unwrap().contains("spec.selector"),
        "{answer}"
    );
}

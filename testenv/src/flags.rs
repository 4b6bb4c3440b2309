//! Command lines and config files of the control-plane components, as plain data.
//!
//! Nothing here touches the filesystem or starts a process; `plane` does that with the
//! results.

use std::path::{Path, PathBuf};

/// The only controllers kube-controller-manager runs: the PV binder (binds claims, hands
/// claims to external provisioners) and the two finalizer controllers that let PVs and PVCs
/// be deleted once unused.
pub(crate) const CONTROLLERS: [&str; 3] = [
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
];

/// Annotation by which kwok recognises the nodes it simulates.
pub(crate) const FAKE_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// Service IP range of the apiserver. Only ever written into objects: nothing routes to it.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// Pod IPs kwok writes into pod status. Inert for the same reason.
const FAKE_POD_CIDR: &str = "10.244.0.0/16";

/// Where etcd listens and keeps its data.
#[derive(Debug, Clone)]
pub(crate) struct EtcdSettings {
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

/// etcd flags for a single-member, loopback-only cluster.
pub(crate) fn etcd_args(s: &EtcdSettings) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", s.client_port);
    let peer = format!("http://127.0.0.1:{}", s.peer_port);
    vec![
        "--name=testenv".into(),
        format!("--data-dir={}", s.data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=testenv={peer}"),
        // The data is thrown away with the plane; fsync only costs time.
        "--unsafe-no-fsync=true".into(),
    ]
}

/// Files and ports of kube-apiserver, and which optional components run beside it.
#[derive(Debug, Clone)]
pub(crate) struct ApiServerSettings {
    pub etcd_client_port: u16,
    pub secure_port: u16,
    pub cert_dir: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    /// kube-controller-manager (with the PV/PVC protection controllers) runs.
    pub controller_manager: bool,
    /// kwok-simulated nodes exist.
    pub fake_nodes: bool,
}

/// Admission plugins that would make a plane without the full controller set misbehave.
pub(crate) fn disabled_admission_plugins(
    controller_manager: bool,
    fake_nodes: bool,
) -> Vec<&'static str> {
    // No ServiceAccount controller creates the `default` ServiceAccount that this plugin
    // demands for every Pod.
    let mut plugins = vec!["ServiceAccount"];
    if !controller_manager {
        // Without the protection controllers nobody removes the finalizers this plugin
        // adds, so deleted PVs and PVCs would stay Terminating forever.
        plugins.push("StorageObjectInUseProtection");
    }
    if fake_nodes {
        // Adds a not-ready taint to new nodes that only the node lifecycle controller
        // (not run here) removes; kwok nodes would never be schedulable.
        plugins.push("TaintNodesByCondition");
    }
    plugins
}

/// kube-apiserver flags: client-certificate authn, RBAC, ServiceAccount tokens, loopback only.
pub(crate) fn apiserver_args(s: &ApiServerSettings) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", s.etcd_client_port),
        "--bind-address=127.0.0.1".into(),
        // Without it the apiserver looks for a default route to pick an address, and fails
        // on machines that have none.
        "--advertise-address=127.0.0.1".into(),
        // The `kubernetes` Service would otherwise get a loopback endpoint.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={}", s.secure_port),
        format!("--cert-dir={}", s.cert_dir.display()),
        format!("--tls-cert-file={}", s.serving_cert.display()),
        format!("--tls-private-key-file={}", s.serving_key.display()),
        format!("--client-ca-file={}", s.client_ca.display()),
        "--authorization-mode=RBAC".into(),
        format!(
            "--service-account-issuer=https://127.0.0.1:{}",
            s.secure_port
        ),
        format!(
            "--service-account-key-file={}",
            s.service_account_public_key.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            s.service_account_key.display()
        ),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        "--allow-privileged=true".into(),
        format!(
            "--disable-admission-plugins={}",
            disabled_admission_plugins(s.controller_manager, s.fake_nodes).join(",")
        ),
    ]
}

/// Port and directories of a component that talks to the apiserver as admin and serves its
/// own health endpoints (kube-controller-manager, kube-scheduler).
#[derive(Debug, Clone)]
pub(crate) struct ClientComponentSettings {
    pub kubeconfig: PathBuf,
    pub secure_port: u16,
    pub cert_dir: PathBuf,
}

fn serving_args(s: &ClientComponentSettings) -> Vec<String> {
    vec![
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", s.secure_port),
        format!("--cert-dir={}", s.cert_dir.display()),
        format!("--authentication-kubeconfig={}", s.kubeconfig.display()),
        format!("--authorization-kubeconfig={}", s.kubeconfig.display()),
    ]
}

/// kube-controller-manager flags: only [`CONTROLLERS`], no leader election.
pub(crate) fn controller_manager_args(s: &ClientComponentSettings) -> Vec<String> {
    let mut args = vec![
        format!("--kubeconfig={}", s.kubeconfig.display()),
        format!("--controllers={}", CONTROLLERS.join(",")),
        "--use-service-account-credentials=false".into(),
        "--leader-elect=false".into(),
        // The defaults (20/30) throttle the PV binder as soon as a test creates a few claims.
        "--kube-api-qps=1000".into(),
        "--kube-api-burst=2000".into(),
    ];
    args.extend(serving_args(s));
    args
}

/// kube-scheduler flags; its client settings live in the config file.
pub(crate) fn scheduler_args(s: &ClientComponentSettings, config: &Path) -> Vec<String> {
    let mut args = vec![format!("--config={}", config.display())];
    args.extend(serving_args(s));
    args
}

/// KubeSchedulerConfiguration: default profile, no leader election, no client throttling.
pub(crate) fn scheduler_config(kubeconfig: &Path) -> String {
    // A single-quoted YAML scalar takes any path; only `'` itself needs doubling.
    let kubeconfig = format!("'{}'", kubeconfig.display().to_string().replace('\'', "''"));
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\n\
         kind: KubeSchedulerConfiguration\n\
         clientConnection:\n  kubeconfig: {kubeconfig}\n  qps: 1000\n  burst: 2000\n\
         leaderElection:\n  leaderElect: false\n"
    )
}

/// kwok flags: manage only nodes carrying [`FAKE_NODE_ANNOTATION`], with the given stage files.
pub(crate) fn kwok_args(kubeconfig: &Path, stage_files: &[PathBuf]) -> Vec<String> {
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!(
            "--manage-nodes-with-annotation-selector={}={}",
            FAKE_NODE_ANNOTATION.0, FAKE_NODE_ANNOTATION.1
        ),
        // The shipped heartbeat stage updates node status; no Lease objects needed.
        "--node-lease-duration-seconds=0".into(),
        // Node and pod addresses are only written into status; keep the node's on loopback
        // so that nothing could ever reach another host through it.
        "--node-ip=127.0.0.1".into(),
        format!("--cidr={FAKE_POD_CIDR}"),
    ];
    args.extend(
        stage_files
            .iter()
            .map(|f| format!("--config={}", f.display())),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_apiserver(controller_manager: bool, fake_nodes: bool) -> ApiServerSettings {
        ApiServerSettings {
            etcd_client_port: 2379,
            secure_port: 6443,
            cert_dir: "/p/apiserver".into(),
            serving_cert: "/p/apiserver.crt".into(),
            serving_key: "/p/apiserver.key".into(),
            client_ca: "/p/ca.crt".into(),
            service_account_key: "/p/sa.key".into(),
            service_account_public_key: "/p/sa.pub".into(),
            controller_manager,
            fake_nodes,
        }
    }

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("--{name}=");
        args.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    #[test]
    fn apiserver_uses_rbac_client_certs_and_a_key_pair_for_tokens() {
        let args = apiserver_args(&mk_apiserver(true, false));
        assert_eq!(flag(&args, "authorization-mode"), Some("RBAC"));
        assert_eq!(flag(&args, "client-ca-file"), Some("/p/ca.crt"));
        assert_eq!(flag(&args, "service-account-key-file"), Some("/p/sa.pub"));
        assert_eq!(
            flag(&args, "service-account-signing-key-file"),
            Some("/p/sa.key")
        );
        assert_eq!(
            flag(&args, "service-account-issuer"),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(flag(&args, "etcd-servers"), Some("http://127.0.0.1:2379"));
    }

    #[test]
    fn apiserver_listens_and_advertises_only_loopback() {
        let args = apiserver_args(&mk_apiserver(true, false));
        assert_eq!(flag(&args, "bind-address"), Some("127.0.0.1"));
        assert_eq!(flag(&args, "advertise-address"), Some("127.0.0.1"));
        assert_eq!(flag(&args, "endpoint-reconciler-type"), Some("none"));
    }

    #[test]
    fn admission_plugins_follow_the_components_that_run() {
        assert_eq!(disabled_admission_plugins(true, false), ["ServiceAccount"]);
        assert_eq!(
            disabled_admission_plugins(false, false),
            ["ServiceAccount", "StorageObjectInUseProtection"]
        );
        assert_eq!(
            disabled_admission_plugins(true, true),
            ["ServiceAccount", "TaintNodesByCondition"]
        );
        let args = apiserver_args(&mk_apiserver(false, true));
        assert_eq!(
            flag(&args, "disable-admission-plugins"),
            Some("ServiceAccount,StorageObjectInUseProtection,TaintNodesByCondition")
        );
    }

    #[test]
    fn etcd_is_a_single_member_cluster_on_loopback() {
        let args = etcd_args(&EtcdSettings {
            data_dir: "/p/etcd".into(),
            client_port: 1,
            peer_port: 2,
        });
        assert_eq!(
            flag(&args, "listen-client-urls"),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            flag(&args, "initial-cluster"),
            Some("testenv=http://127.0.0.1:2")
        );
        assert_eq!(flag(&args, "name"), Some("testenv"));
    }

    #[test]
    fn controller_manager_runs_only_the_volume_controllers() {
        let args = controller_manager_args(&ClientComponentSettings {
            kubeconfig: "/p/admin.kubeconfig".into(),
            secure_port: 7,
            cert_dir: "/p/kcm".into(),
        });
        assert_eq!(
            flag(&args, "controllers"),
            Some(
                "persistentvolume-binder-controller,persistentvolume-protection-controller,\
                 persistentvolumeclaim-protection-controller"
            )
        );
        assert_eq!(flag(&args, "leader-elect"), Some("false"));
        assert_eq!(flag(&args, "bind-address"), Some("127.0.0.1"));
        assert_eq!(flag(&args, "secure-port"), Some("7"));
    }

    #[test]
    fn scheduler_config_quotes_the_kubeconfig_path() {
        let yaml = scheduler_config(Path::new("/tmp/it's here/admin.kubeconfig"));
        assert!(
            yaml.contains("kubeconfig: '/tmp/it''s here/admin.kubeconfig'"),
            "{yaml}"
        );
        assert!(yaml.contains("leaderElect: false"));
    }

    #[test]
    fn kwok_gets_every_stage_file_and_manages_only_annotated_nodes() {
        let args = kwok_args(
            Path::new("/p/admin.kubeconfig"),
            &["/s/a.yaml".into(), "/s/b.yaml".into()],
        );
        let configs: Vec<_> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--config="))
            .collect();
        assert_eq!(configs, ["/s/a.yaml", "/s/b.yaml"]);
        assert_eq!(
            flag(&args, "manage-nodes-with-annotation-selector"),
            Some("kwok.x-k8s.io/node=fake")
        );
    }
}

//! Starting, using and stopping one control plane.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::time::Instant;

use crate::binaries::Binaries;
use crate::certs::{self, ADMIN_USER, PlaneCredentials};
use crate::component::Component;
use crate::error::TestEnvError;
use crate::flags::{self, ApiServerSettings, ClientComponentSettings, EtcdSettings};
use crate::kubeconfig::{self, Credentials};
use crate::logs;
use crate::nodes;
use crate::process::ChildProcess;
use crate::reaper::ProcessGroup;

/// Default limit for the whole start-up (not counting a build of the binaries). Start-up
/// normally takes seconds; this is a failure guard for a loaded CI machine.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);
/// Lines of a component's log quoted in start-up errors.
const LOG_TAIL_LINES: usize = 40;
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Limit for one readiness probe request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of ServiceAccount tokens minted for tests (they are not refreshed).
const TOKEN_LIFETIME_SECONDS: i64 = 24 * 60 * 60;

/// Paths of everything a plane keeps in its temporary directory.
#[derive(Debug, Clone)]
struct PlaneFiles {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
    admin_kubeconfig: PathBuf,
    scheduler_config: PathBuf,
    etcd_data: PathBuf,
    logs: PathBuf,
    service_accounts: PathBuf,
    /// Root of the per-component `--cert-dir`s.
    cert_dirs: PathBuf,
}

impl PlaneFiles {
    fn new(root: &Path) -> Self {
        Self {
            ca_cert: root.join("ca.crt"),
            serving_cert: root.join("apiserver.crt"),
            serving_key: root.join("apiserver.key"),
            admin_cert: root.join("admin.crt"),
            admin_key: root.join("admin.key"),
            service_account_key: root.join("service-account.key"),
            service_account_public_key: root.join("service-account.pub"),
            admin_kubeconfig: root.join("admin.kubeconfig"),
            scheduler_config: root.join("kube-scheduler.yaml"),
            etcd_data: root.join("etcd"),
            logs: root.join("logs"),
            service_accounts: root.join("service-accounts"),
            cert_dirs: root.join("certs"),
        }
    }

    fn log(&self, component: Component) -> PathBuf {
        self.logs.join(format!("{component}.log"))
    }

    fn cert_dir(&self, component: Component) -> PathBuf {
        self.cert_dirs.join(component.program())
    }
}

/// A component process of a running plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningComponent {
    /// Which program it is.
    pub component: Component,
    /// Its process id.
    pub pid: u32,
    /// File with its stdout and stderr.
    pub log: PathBuf,
}

/// Chooses the optional components of a [`ControlPlane`] and starts it.
#[derive(Debug, Clone)]
pub struct ControlPlaneBuilder {
    controller_manager: bool,
    scheduler: bool,
    fake_nodes: Vec<String>,
    binaries: Option<Binaries>,
    start_timeout: Duration,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        Self {
            controller_manager: false,
            scheduler: false,
            fake_nodes: Vec::new(),
            binaries: None,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl ControlPlaneBuilder {
    /// Runs kube-controller-manager with only the PV binder and the PV/PVC protection
    /// controllers. Without it, claims are never bound and the apiserver is told not to add
    /// the protection finalizers (so deletes do not hang).
    pub fn controller_manager(mut self, on: bool) -> Self {
        self.controller_manager = on;
        self
    }

    /// Runs kube-scheduler (default profile), which sets `volume.kubernetes.io/selected-node`
    /// on WaitForFirstConsumer claims of pods it schedules.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }

    /// Creates Ready nodes with these names, simulated by kwok (which also marks pods bound
    /// to them Running). An empty list runs no kwok.
    pub fn fake_nodes(mut self, names: &[&str]) -> Self {
        self.fake_nodes = names.iter().map(|&n| n.to_owned()).collect();
        self
    }

    /// Uses these binaries instead of [`Binaries::locate`].
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Limit for start-up once the binaries are there (default [`DEFAULT_START_TIMEOUT`]).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the plane and waits until every component is ready. On failure everything
    /// started so far is stopped and the error quotes the failing component's log.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), testenv::TestEnvError> {
    /// let plane = testenv::ControlPlane::builder()
    ///     .controller_manager(true)
    ///     .scheduler(true)
    ///     .fake_nodes(&["node-a", "node-b"])
    ///     .start()
    ///     .await?;
    /// let client = plane.admin_client().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(mut self) -> Result<ControlPlane, TestEnvError> {
        let binaries = match self.binaries.take() {
            Some(binaries) => binaries,
            None => Binaries::locate().await?,
        };
        Startup::run(self, binaries).await
    }
}

/// State of a plane while it starts; becomes the [`ControlPlane`] when every component is
/// ready.
struct Startup {
    options: ControlPlaneBuilder,
    binaries: Binaries,
    // Declared before `dir`: on an error the processes die before their directory goes.
    processes: ProcessGroup,
    components: Vec<RunningComponent>,
    dir: tempfile::TempDir,
    files: PlaneFiles,
    started: Instant,
    deadline: Instant,
}

impl Startup {
    async fn run(
        options: ControlPlaneBuilder,
        binaries: Binaries,
    ) -> Result<ControlPlane, TestEnvError> {
        let started = Instant::now();
        let deadline = started + options.start_timeout;
        let dir = tempfile::Builder::new()
            .prefix("testenv-")
            .tempdir()
            .map_err(TestEnvError::io(
                "creating a directory in",
                &std::env::temp_dir(),
            ))?;
        let files = PlaneFiles::new(dir.path());
        write_credentials(&files, &certs::generate()?)?;
        let processes = ProcessGroup::new(Some(dir.path()))?;
        let mut startup = Startup {
            options,
            binaries,
            processes,
            components: Vec::new(),
            dir,
            files,
            started,
            deadline,
        };
        let (server_url, admin_config) = startup.start_components().await?;
        Ok(startup.finish(server_url, admin_config))
    }

    /// Starts every component; returns the apiserver URL and the admin client config.
    async fn start_components(&mut self) -> Result<(String, kube::Config), TestEnvError> {
        let [
            etcd_client,
            etcd_peer,
            apiserver,
            controller_manager,
            scheduler,
        ] = free_ports()?;
        let files = self.files.clone();
        let fake_nodes = !self.options.fake_nodes.is_empty();

        self.spawn(
            Component::Etcd,
            &flags::etcd_args(&EtcdSettings {
                data_dir: files.etcd_data.clone(),
                client_port: etcd_client,
                peer_port: etcd_peer,
            }),
        )?;
        // The apiserver retries etcd until it answers, so both start at once.
        self.spawn(
            Component::KubeApiserver,
            &flags::apiserver_args(&ApiServerSettings {
                etcd_client_port: etcd_client,
                secure_port: apiserver,
                cert_dir: files.cert_dir(Component::KubeApiserver),
                serving_cert: files.serving_cert.clone(),
                serving_key: files.serving_key.clone(),
                client_ca: files.ca_cert.clone(),
                service_account_key: files.service_account_key.clone(),
                service_account_public_key: files.service_account_public_key.clone(),
                controller_manager: self.options.controller_manager,
                fake_nodes,
            }),
        )?;
        let server_url = loopback_url(apiserver);
        let admin = kubeconfig::kubeconfig(
            &server_url,
            &files.ca_cert,
            ADMIN_USER,
            &Credentials::ClientCertificate {
                cert: &files.admin_cert,
                key: &files.admin_key,
            },
        );
        write_file(&files.admin_kubeconfig, &kubeconfig::render(&admin)?)?;
        let admin_config = load_config(admin, ADMIN_USER).await?;
        let admin_client = new_client(&admin_config)?;
        self.wait_until(Component::KubeApiserver, || {
            probe_health(&admin_client, "/readyz")
        })
        .await?;

        let component_settings = |component: Component, port: u16| ClientComponentSettings {
            kubeconfig: files.admin_kubeconfig.clone(),
            secure_port: port,
            cert_dir: files.cert_dir(component),
        };
        if self.options.controller_manager {
            let settings = component_settings(Component::KubeControllerManager, controller_manager);
            self.spawn(
                Component::KubeControllerManager,
                &flags::controller_manager_args(&settings),
            )?;
        }
        if self.options.scheduler {
            write_file(
                &files.scheduler_config,
                &flags::scheduler_config(&files.admin_kubeconfig),
            )?;
            let settings = component_settings(Component::KubeScheduler, scheduler);
            self.spawn(
                Component::KubeScheduler,
                &flags::scheduler_args(&settings, &files.scheduler_config),
            )?;
        }
        if fake_nodes {
            let stages = self.binaries.kwok_stages()?;
            self.spawn(
                Component::Kwok,
                &flags::kwok_args(&files.admin_kubeconfig, &stages),
            )?;
        }

        if self.options.controller_manager {
            let client = new_client(&component_probe_config(&admin_config, controller_manager))?;
            self.wait_until(Component::KubeControllerManager, || {
                probe_health(&client, "/healthz")
            })
            .await?;
        }
        if self.options.scheduler {
            let client = new_client(&component_probe_config(&admin_config, scheduler))?;
            self.wait_until(Component::KubeScheduler, || {
                probe_health(&client, "/readyz")
            })
            .await?;
        }
        if fake_nodes {
            let api = Api::<Node>::all(admin_client.clone());
            for name in &self.options.fake_nodes {
                api.create(&PostParams::default(), &nodes::fake_node(name))
                    .await
                    .map_err(TestEnvError::api(format!("creating fake node {name}")))?;
            }
            let names = self.options.fake_nodes.clone();
            self.wait_until(Component::Kwok, || probe_nodes_ready(&api, &names))
                .await?;
        }
        Ok((server_url, admin_config))
    }

    /// Starts `component` with `args`, logging to its log file.
    fn spawn(&mut self, component: Component, args: &[String]) -> Result<(), TestEnvError> {
        let program = self.binaries.program(component)?;
        let log = self.files.log(component);
        let pid =
            self.processes
                .spawn(component.program(), Command::new(program).args(args), &log)?;
        self.components.push(RunningComponent {
            component,
            pid,
            log,
        });
        Ok(())
    }

    /// Polls `probe` until it succeeds. Fails early if any component exits, and at the
    /// deadline with `component`'s log.
    async fn wait_until<F, Fut>(
        &mut self,
        component: Component,
        mut probe: F,
    ) -> Result<(), TestEnvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            if let Some((member, status)) = self.processes.exited() {
                return Err(TestEnvError::Exited {
                    component: member.name.clone(),
                    status,
                    log_tail: logs::tail(&member.log, LOG_TAIL_LINES),
                });
            }
            let last_probe = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(seen)) => seen,
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() >= self.deadline {
                return Err(TestEnvError::NotReady {
                    component: component.to_string(),
                    waited: self.started.elapsed(),
                    last_probe,
                    log_tail: logs::tail(&self.files.log(component), LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn finish(self, server_url: String, admin_config: kube::Config) -> ControlPlane {
        ControlPlane {
            processes: self.processes,
            components: self.components,
            dir: self.dir,
            files: self.files,
            server_url,
            admin_config,
        }
    }
}

/// A running control plane. Dropping it kills every component and removes its directory;
/// if the process ends without dropping it (a `static`, an abort), a watchdog does the same.
#[derive(Debug)]
pub struct ControlPlane {
    // Declared before `dir`: the processes die before their directory is removed.
    processes: ProcessGroup,
    components: Vec<RunningComponent>,
    dir: tempfile::TempDir,
    files: PlaneFiles,
    server_url: String,
    admin_config: kube::Config,
}

impl ControlPlane {
    /// A builder with no optional components.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// A new admin (`system:masters`) client bound to the current tokio runtime.
    ///
    /// A `kube::Client` only works on the runtime that created it, and `#[tokio::test]`
    /// makes one runtime per test, so call this in each test rather than sharing a client.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        // The same conversion already succeeded during start-up and reads no files, so it
        // cannot fail now.
        new_client(&self.admin_config).expect("the admin client config was validated at start")
    }

    /// Like [`client`](Self::client), returning an error instead of panicking.
    pub async fn admin_client(&self) -> Result<kube::Client, TestEnvError> {
        new_client(&self.admin_config)
    }

    /// The admin kubeconfig file (client certificate in `system:masters`), for kubectl or a
    /// spawned program.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.files.admin_kubeconfig
    }

    /// `https://127.0.0.1:PORT` of the apiserver.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The plane's temporary directory (certificates, kubeconfigs, etcd data, `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The component processes, in start order.
    pub fn components(&self) -> &[RunningComponent] {
        &self.components
    }

    /// The first component (in start order) that has exited, if any, and how: a plane
    /// whose components all run returns `None`.
    pub fn exited_component(&mut self) -> Option<(Component, ExitStatus)> {
        let (member, status) = self.processes.exited()?;
        let component = Component::ALL
            .into_iter()
            .find(|c| c.program() == member.name)?;
        Some((component, status))
    }

    /// The last `lines` lines of a component's log; `None` if it does not run.
    pub fn log_tail(&self, component: Component, lines: usize) -> Option<String> {
        self.components
            .iter()
            .find(|c| c.component == component)
            .map(|c| logs::tail(&c.log, lines))
    }

    /// Creates the ServiceAccount if missing, mints a token for it with TokenRequest and
    /// returns a client acting as exactly that ServiceAccount: it has only the RBAC granted
    /// to it. The token lasts a day and is not refreshed.
    ///
    /// ```no_run
    /// # async fn demo(plane: &testenv::ControlPlane) -> Result<(), testenv::TestEnvError> {
    /// let namespace = testenv::create_namespace(&plane.client(), "rbac").await?;
    /// let as_provisioner = plane.service_account_client(&namespace, "provisioner").await?;
    /// # Ok(()) }
    /// ```
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, TestEnvError> {
        let config = self.service_account_config(namespace, name).await?;
        let user = service_account_user(namespace, name);
        new_client(&load_config(config, &user).await?)
    }

    /// Like [`service_account_client`](Self::service_account_client), written as a kubeconfig
    /// file at `path` (for running a program as that ServiceAccount).
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), TestEnvError> {
        let config = self.service_account_config(namespace, name).await?;
        write_file(path, &kubeconfig::render(&config)?)
    }

    /// Starts `command` as the ServiceAccount `namespace/service_account`: `KUBECONFIG`
    /// points at a kubeconfig for it (in the plane's directory). Output goes to `log`.
    ///
    /// ```no_run
    /// # async fn demo(plane: &testenv::ControlPlane, namespace: &str) -> Result<(), testenv::TestEnvError> {
    /// let log = plane.dir().join("logs").join("provisioner.log");
    /// let mut command = std::process::Command::new("target/debug/provisioner");
    /// command.arg("--provisioner-name=example.com/nfs");
    /// let provisioner = plane
    ///     .spawn_as_service_account(namespace, "provisioner", &mut command, &log)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn_as_service_account(
        &self,
        namespace: &str,
        service_account: &str,
        command: &mut Command,
        log: &Path,
    ) -> Result<ChildProcess, TestEnvError> {
        let path = self
            .files
            .service_accounts
            .join(format!("{namespace}.{service_account}.kubeconfig"));
        create_dir(&self.files.service_accounts)?;
        self.service_account_kubeconfig(namespace, service_account, &path)
            .await?;
        let name = Path::new(command.get_program()).file_name().map_or_else(
            || "program".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(ChildProcess::spawn(
            &name,
            command.env("KUBECONFIG", &path),
            log,
        )?)
    }

    async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Kubeconfig, TestEnvError> {
        let api = Api::<ServiceAccount>::namespaced(self.admin_client().await?, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(err) => {
                return Err(TestEnvError::api(format!(
                    "creating ServiceAccount {namespace}/{name}"
                ))(err));
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(TestEnvError::api(format!(
                "requesting a token for ServiceAccount {namespace}/{name}"
            )))?
            .status
            .and_then(|status| status.token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| TestEnvError::NoToken {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        Ok(kubeconfig::kubeconfig(
            &self.server_url,
            &self.files.ca_cert,
            &service_account_user(namespace, name),
            &Credentials::Token(&token),
        ))
    }
}

/// The user name the apiserver gives a ServiceAccount's tokens.
fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn loopback_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Distinct free loopback ports: all are bound at once, then released for the components.
fn free_ports<const N: usize>() -> Result<[u16; N], TestEnvError> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TestEnvError::Ports)?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(TestEnvError::Ports)?.port();
    }
    Ok(ports)
}

fn write_credentials(files: &PlaneFiles, creds: &PlaneCredentials) -> Result<(), TestEnvError> {
    for (path, pem) in [
        (&files.ca_cert, &creds.ca_cert_pem),
        (&files.serving_cert, &creds.serving_cert_pem),
        (&files.serving_key, &creds.serving_key_pem),
        (&files.admin_cert, &creds.admin_cert_pem),
        (&files.admin_key, &creds.admin_key_pem),
        (&files.service_account_key, &creds.service_account_key_pem),
        (
            &files.service_account_public_key,
            &creds.service_account_public_key_pem,
        ),
    ] {
        write_file(path, pem)?;
    }
    create_dir(&files.logs)
}

fn write_file(path: &Path, contents: &str) -> Result<(), TestEnvError> {
    std::fs::write(path, contents).map_err(TestEnvError::io("writing", path))
}

fn create_dir(path: &Path) -> Result<(), TestEnvError> {
    std::fs::create_dir_all(path).map_err(TestEnvError::io("creating", path))
}

async fn load_config(config: Kubeconfig, user: &str) -> Result<kube::Config, TestEnvError> {
    kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|source| TestEnvError::ClientConfig {
            user: user.to_owned(),
            source,
        })
}

fn new_client(config: &kube::Config) -> Result<kube::Client, TestEnvError> {
    kube::Client::try_from(config.clone()).map_err(TestEnvError::api("building a client"))
}

/// Admin credentials for the health endpoints of kube-controller-manager or kube-scheduler,
/// which serve a self-signed certificate of their own.
fn component_probe_config(admin: &kube::Config, port: u16) -> kube::Config {
    let mut config = admin.clone();
    config.cluster_url = loopback_url(port)
        .parse()
        .expect("a loopback URL with a numeric port is a valid URI");
    config.root_cert = None;
    config.accept_invalid_certs = true;
    config.default_retry = false;
    config
}

/// `Ok` once `GET path` answers `ok`; otherwise what it answered.
async fn probe_health(client: &kube::Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|err| err.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(err) => Err(err.to_string()),
    }
}

/// `Ok` once every named node is Ready.
async fn probe_nodes_ready(api: &Api<Node>, names: &[String]) -> Result<(), String> {
    for name in names {
        match api.get(name).await {
            Ok(node) if nodes::is_ready(&node) => {}
            Ok(_) => return Err(format!("node {name} is not Ready yet")),
            Err(err) => return Err(format!("node {name}: {err}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: [u16; 5] = free_ports().unwrap();
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 5);
        assert!(ports.iter().all(|&p| p != 0));
    }

    #[test]
    fn service_account_user_names_follow_the_apiserver() {
        assert_eq!(
            service_account_user("ns", "sa"),
            "system:serviceaccount:ns:sa"
        );
    }

    #[test]
    fn every_component_logs_to_its_own_file() {
        let files = PlaneFiles::new(Path::new("/p"));
        let logs: std::collections::HashSet<_> =
            Component::ALL.iter().map(|&c| files.log(c)).collect();
        assert_eq!(logs.len(), Component::ALL.len());
        assert_eq!(files.log(Component::Etcd), Path::new("/p/logs/etcd.log"));
    }
}

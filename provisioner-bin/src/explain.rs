//! `explain`: why is my PersistentVolumeClaim Pending?
//!
//! Answers from manifests, without a cluster, with the PVC→PV rules of
//! [`provisioner_core::binding`]: which PersistentVolume Kubernetes would bind the claim to
//! (or none) and, for every other volume, the first reason it was passed over.
//!
//! The search is chosen from the inputs, as Kubernetes chooses it:
//! - the claim names a volume (`spec.volumeName`): the named-volume checks;
//! - a node is given: the scheduler's search for that node (WaitForFirstConsumer);
//! - otherwise: the PV controller's search, with `--wait-for-first-consumer` when the
//!   claim's class binds on first consumer.
//!
//! Reading the inputs ([`ExplainInput::from_files`]) is separate from deciding
//! ([`ExplainInput::explain`]) so that a live mode can fill the same input from a cluster.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use provisioner_core::binding::find::{
    MatchError, MatchForm, MatchReport, explain_match, explain_named_volume,
};
use provisioner_core::binding::sync::{NamedVolumeOutcome, named_volume_outcome};
use serde::Serialize;

use crate::manifest::{self, ManifestError};

/// Command-line arguments of `explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The claim: one PersistentVolumeClaim (YAML or JSON).
    #[arg(long, value_name = "CLAIM_FILE")]
    pub claim: PathBuf,
    /// The volumes: PersistentVolumes as multi-document YAML, a `v1 List`, or a JSON array.
    #[arg(long, value_name = "VOLUMES_FILE")]
    pub volumes: PathBuf,
    /// The claim's StorageClass has `volumeBindingMode: WaitForFirstConsumer` (PV controller
    /// search: only volumes pre-bound to the claim are bound before a pod is scheduled).
    #[arg(long)]
    pub wait_for_first_consumer: bool,
    /// A Node (YAML or JSON): explain the scheduler's search for a pod placed on this node.
    #[arg(long, value_name = "NODE_FILE")]
    pub node: Option<PathBuf>,
    /// With --node: a volume already chosen for another claim of the same pod (repeatable).
    #[arg(long, value_name = "PV_NAME")]
    pub exclude: Vec<String>,
    /// Match as a cluster whose VolumeAttributesClass feature gate is off (the default
    /// before Kubernetes 1.34).
    #[arg(long)]
    pub without_volume_attributes_class: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How `explain` prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Sentences for people.
    Text,
    /// Exactly one JSON object: `{"chosen", "rejected": [{"volume", "reason"}], "error"}`.
    Json,
}

/// Why `explain` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// An input file could not be read or understood.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Kubernetes itself would refuse to search (invalid quantity, invalid selector, ...).
    #[error(transparent)]
    Match(#[from] MatchError),
    /// `--exclude` without `--node`.
    #[error("--exclude only applies to the scheduler's search: give --node too")]
    ExcludeWithoutNode,
}

/// Everything a search needs, however it was obtained.
#[derive(Debug, Clone)]
pub struct ExplainInput {
    /// The claim.
    pub claim: PersistentVolumeClaim,
    /// Every volume to consider, in order.
    pub volumes: Vec<PersistentVolume>,
    /// The claim's class binds on first consumer.
    pub wait_for_first_consumer: bool,
    /// The node, for the scheduler's search.
    pub node: Option<Node>,
    /// Volumes chosen for the pod's other claims.
    pub excluded: BTreeSet<String>,
    /// The VolumeAttributesClass feature gate.
    pub volume_attributes_class: bool,
}

/// Which search answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// The claim names its volume.
    NamedVolume,
    /// kube-scheduler's search for one node.
    Scheduler,
    /// kube-controller-manager's PV controller.
    Controller,
}

/// The answer: the report and which search produced it.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Which search ran.
    pub kind: SearchKind,
    /// The chosen volume and the reasons for every other one.
    pub report: MatchReport,
}

impl ExplainInput {
    /// Reads the inputs named by `args`.
    pub fn from_files(args: &ExplainArgs) -> Result<Self, ExplainError> {
        if !args.exclude.is_empty() && args.node.is_none() {
            return Err(ExplainError::ExcludeWithoutNode);
        }
        Ok(ExplainInput {
            claim: manifest::read_one(&args.claim)?,
            volumes: manifest::read_all(&args.volumes)?,
            wait_for_first_consumer: args.wait_for_first_consumer,
            node: args.node.as_deref().map(manifest::read_one).transpose()?,
            excluded: args.exclude.iter().cloned().collect(),
            volume_attributes_class: !args.without_volume_attributes_class,
        })
    }

    /// Runs the search Kubernetes would run for this input.
    pub fn explain(&self) -> Result<Explanation, ExplainError> {
        let vac = self.volume_attributes_class;
        let named = self
            .claim
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_name.as_deref())
            .filter(|name| !name.is_empty());
        if named.is_some() {
            let report =
                explain_named_volume(&self.claim, &self.volumes, |pv| match named_volume_outcome(
                    &self.claim,
                    Some(pv),
                    vac,
                ) {
                    outcome if outcome.binds() => Ok(()),
                    outcome => Err(outcome),
                });
            return Ok(Explanation {
                kind: SearchKind::NamedVolume,
                report,
            });
        }
        let (kind, form) = match &self.node {
            Some(node) => (
                SearchKind::Scheduler,
                MatchForm::Scheduler {
                    node,
                    excluded: &self.excluded,
                },
            ),
            None => (
                SearchKind::Controller,
                MatchForm::Controller {
                    delay_binding: self.wait_for_first_consumer,
                },
            ),
        };
        let report = explain_match(&self.claim, &self.volumes, form, vac)?;
        Ok(Explanation { kind, report })
    }
}

/// The JSON shape of `explain -o json`.
#[derive(Debug, Serialize)]
struct JsonAnswer<'a> {
    chosen: Option<&'a str>,
    rejected: Vec<JsonRejected>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct JsonRejected {
    volume: String,
    reason: String,
}

/// Prints an answer in `format`. In text format an error goes to `err`; in JSON format it
/// is part of the one object printed to `out`.
pub fn render(
    out: &mut dyn Write,
    err: &mut dyn Write,
    format: OutputFormat,
    input: Option<&ExplainInput>,
    answer: &Result<Explanation, ExplainError>,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let json = match answer {
                Ok(explanation) => JsonAnswer {
                    chosen: explanation.report.chosen.as_deref(),
                    rejected: explanation
                        .report
                        .rejected
                        .iter()
                        .map(|r| JsonRejected {
                            volume: r.volume.clone(),
                            reason: r.reason.to_string(),
                        })
                        .collect(),
                    error: None,
                },
                Err(error) => JsonAnswer {
                    chosen: None,
                    rejected: Vec::new(),
                    error: Some(error.to_string()),
                },
            };
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)
        }
        OutputFormat::Text => match answer {
            Ok(explanation) => render_text(out, input, explanation),
            Err(error) => writeln!(err, "error: {error}"),
        },
    }
}

fn render_text(
    out: &mut dyn Write,
    input: Option<&ExplainInput>,
    explanation: &Explanation,
) -> std::io::Result<()> {
    let claim = input
        .map(|i| {
            format!(
                "{}/{}",
                i.claim.metadata.namespace.as_deref().unwrap_or("default"),
                i.claim.metadata.name.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "the claim".to_owned());
    let search = match explanation.kind {
        SearchKind::NamedVolume => "the claim names its volume (spec.volumeName)".to_owned(),
        SearchKind::Scheduler => format!(
            "kube-scheduler's search for node {}",
            input
                .and_then(|i| i.node.as_ref())
                .and_then(|n| n.metadata.name.as_deref())
                .unwrap_or("(unnamed)")
        ),
        SearchKind::Controller => "kube-controller-manager's PV controller search".to_owned(),
    };
    writeln!(out, "Claim {claim}: {search}.")?;
    match &explanation.report.chosen {
        Some(chosen) => writeln!(out, "Kubernetes binds it to volume {chosen}.")?,
        None => {
            writeln!(out, "No volume matches: the claim stays Pending.")?;
            if explanation.kind == SearchKind::NamedVolume {
                let named = input
                    .and_then(|i| i.claim.spec.as_ref())
                    .and_then(|s| s.volume_name.clone())
                    .unwrap_or_default();
                let listed = input.is_some_and(|i| {
                    i.volumes
                        .iter()
                        .any(|pv| pv.metadata.name.as_deref() == Some(named.as_str()))
                });
                if !listed {
                    writeln!(
                        out,
                        "The volume it names, {named}, is not among the volumes given ({}).",
                        NamedVolumeOutcome::VolumeNotFound
                    )?;
                }
            } else {
                writeln!(
                    out,
                    "If its StorageClass names a provisioner, that provisioner is asked to create a volume."
                )?;
            }
        }
    }
    if !explanation.report.rejected.is_empty() {
        writeln!(out, "Volumes passed over:")?;
        for rejected in &explanation.report.rejected {
            writeln!(out, "  {}: {}", rejected.volume, rejected.reason)?;
        }
    }
    Ok(())
}

/// Runs `explain` end to end: reads, decides, prints. Returns whether it answered (the
/// process exit status is the caller's business).
pub fn run(args: &ExplainArgs, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<bool> {
    let input = ExplainInput::from_files(args);
    let (input, answer) = match input {
        Ok(input) => {
            let answer = input.explain();
            (Some(input), answer)
        }
        Err(error) => (None, Err(error)),
    };
    render(out, err, args.output, input.as_ref(), &answer)?;
    Ok(answer.is_ok())
}

//! Matching claims against volumes: the index versus the linear reference search.
//!
//! Generates (deterministically) 100,000 volumes and 10,000 claims, matches every claim with
//! [`VolumeIndex`] in the PV controller's and the scheduler's forms, matches a sample of the
//! claims (or all of them) with the linear search, asserts identical choices, and prints
//! both times and the ratio.
//!
//! Sizes: `--quick` (2,000 volumes, 200 claims, every claim checked linearly), or the
//! environment variables `BENCH_VOLUMES`, `BENCH_CLAIMS` and `BENCH_ORACLE_CLAIMS` (how
//! many claims the linear search runs on; default 200, a deterministic evenly spaced
//! sample whose mean time per claim is extrapolated to all claims).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provisioner_benches::cluster;
use provisioner_core::binding::find::{find_best_match_for_claim, find_matching_volume_for_node};
use provisioner_core::binding::index::VolumeIndex;

const SEED_VOLUMES: u64 = 0x5EED_0001;
const SEED_CLAIMS: u64 = 0x5EED_0002;

struct Sizes {
    volumes: usize,
    claims: usize,
    oracle_claims: usize,
}

fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--quick") {
        return Sizes {
            volumes: 2_000,
            claims: 200,
            oracle_claims: 200,
        };
    }
    let claims = env_size("BENCH_CLAIMS", 10_000);
    Sizes {
        volumes: env_size("BENCH_VOLUMES", 100_000),
        claims,
        oracle_claims: env_size("BENCH_ORACLE_CLAIMS", 200).clamp(1, claims.max(1)),
    }
}

fn name(pv: Option<&PersistentVolume>) -> Option<String> {
    pv.and_then(|pv| pv.metadata.name.clone())
}

fn node(zone: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(format!("node-{zone}")),
            labels: Some([("topology.kubernetes.io/zone".to_owned(), zone.to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Evenly spaced claim positions, always including the first.
fn sample(claims: usize, wanted: usize) -> Vec<usize> {
    let step = (claims / wanted.max(1)).max(1);
    (0..claims).step_by(step).take(wanted).collect()
}

struct Form<'a> {
    label: &'a str,
    indexed: &'a dyn Fn(&PersistentVolumeClaim) -> Option<String>,
    linear: &'a dyn Fn(&PersistentVolumeClaim) -> Option<String>,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn run_form(form: &Form<'_>, claims: &[PersistentVolumeClaim], positions: &[usize]) {
    let started = Instant::now();
    let indexed: Vec<Option<String>> = claims.iter().map(|c| (form.indexed)(c)).collect();
    let index_time = started.elapsed();

    let started = Instant::now();
    let linear: Vec<(usize, Option<String>)> = positions
        .iter()
        .map(|&j| (j, (form.linear)(&claims[j])))
        .collect();
    let linear_time = started.elapsed();

    for (j, chosen) in &linear {
        assert_eq!(
            &indexed[*j], chosen,
            "{}: the index and the linear search disagree on claim {j}",
            form.label
        );
    }
    let matched = indexed.iter().filter(|c| c.is_some()).count();
    let per_claim_index = seconds(index_time) / claims.len() as f64;
    let per_claim_linear = seconds(linear_time) / positions.len() as f64;
    let linear_all = per_claim_linear * claims.len() as f64;
    println!("{}:", form.label);
    println!(
        "  index:  {} claims in {:.3} s ({:.1} µs/claim), {matched} matched",
        claims.len(),
        seconds(index_time),
        per_claim_index * 1e6
    );
    if positions.len() == claims.len() {
        println!(
            "  linear: {} claims in {:.3} s ({:.1} µs/claim)",
            positions.len(),
            seconds(linear_time),
            per_claim_linear * 1e6
        );
    } else {
        println!(
            "  linear: {} sampled claims in {:.3} s ({:.1} µs/claim); EXTRAPOLATED to all {} claims: {:.1} s",
            positions.len(),
            seconds(linear_time),
            per_claim_linear * 1e6,
            claims.len(),
            linear_all
        );
    }
    println!(
        "  identical choices on the {} claims checked; index speed-up: {:.0}x",
        positions.len(),
        per_claim_linear / per_claim_index
    );
}

fn main() {
    let sizes = sizes();
    println!(
        "matching {} claims against {} volumes (seeded, deterministic)",
        sizes.claims, sizes.volumes
    );
    let volumes = cluster::volumes(SEED_VOLUMES, sizes.volumes, sizes.claims);
    let claims = cluster::claims(SEED_CLAIMS, sizes.claims);

    let started = Instant::now();
    let index =
        VolumeIndex::from_volumes(volumes.iter().cloned()).expect("generated volumes are valid");
    println!("index built in {:.3} s", seconds(started.elapsed()));
    let positions = sample(claims.len(), sizes.oracle_claims);

    run_form(
        &Form {
            label: "PV controller (findBestMatchForClaim)",
            indexed: &|claim| {
                name(
                    index
                        .find_best_match_for_claim(claim, false, true)
                        .expect("search runs"),
                )
            },
            linear: &|claim| {
                name(find_best_match_for_claim(claim, &volumes, false, true).expect("search runs"))
            },
        },
        &claims,
        &positions,
    );

    let nodes: Vec<Node> = cluster::ZONES.iter().map(|z| node(z)).collect();
    let excluded = BTreeSet::new();
    let node_for = |claim: &PersistentVolumeClaim| {
        let key = claim.metadata.name.as_deref().map_or(0, str::len);
        &nodes[key % nodes.len()]
    };
    run_form(
        &Form {
            label: "scheduler (findMatchingVolumes, one node per claim)",
            indexed: &|claim| {
                name(
                    index
                        .find_matching_volume_for_node(claim, node_for(claim), &excluded, true)
                        .expect("search runs"),
                )
            },
            linear: &|claim| {
                name(
                    find_matching_volume_for_node(
                        claim,
                        &volumes,
                        node_for(claim),
                        &excluded,
                        true,
                    )
                    .expect("search runs"),
                )
            },
        },
        &claims,
        &positions,
    );
}

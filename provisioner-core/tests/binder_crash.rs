//! Crash recovery and multi-sync scenarios: upstream's binder tests 1-8..1-10 (a bind
//! interrupted after each write), TestMultiSync (10-x) and the controller tests 5-2..5-4.

mod binder_support;

use binder_support::*;
use provisioner_core::binding::sync::{
    ANN_BIND_COMPLETED as BC, ANN_BOUND_BY_CONTROLLER as BBC, ClaimContext, ObjectSet, SyncOptions,
    Then, Write, sync_claim,
};

fn bound_pair() -> (
    k8s_openapi::api::core::v1::PersistentVolume,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
) {
    (
        mk_volume("volume", "1Gi")
            .bound_to("claim", "uid")
            .phase(BOUND)
            .ann(BBC),
        mk_claim("claim", "uid", "1Gi")
            .volume("volume")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC),
    )
}

/// The bind of a free volume writes exactly: the volume's claimRef, the volume's status,
/// the claim's spec, the claim's status. Interrupting it after each write leaves upstream's
/// fixtures 1-8, 1-9 and 1-10, and the next `syncClaim` finishes the job.
#[test]
fn a_bind_interrupted_after_any_write_is_finished_by_the_next_sync() {
    let options = SyncOptions::default();
    let start = ObjectSet::new(
        [mk_volume("volume", "1Gi")],
        [mk_claim("claim", "uid", "1Gi")],
    );
    let claim = start.claim(NS, "claim").cloned().expect("claim");
    let plan = sync_claim(&claim, &ClaimContext::new(start.volumes(), &options));
    let kinds: Vec<&str> = plan
        .writes
        .iter()
        .map(|w| match w {
            Write::UpdateVolume(_) => "volume",
            Write::UpdateVolumeStatus(_) => "volume status",
            Write::UpdateClaim(_) => "claim",
            Write::UpdateClaimStatus(_) => "claim status",
            Write::Event(_) => "event",
        })
        .collect();
    assert_eq!(kinds, ["volume", "volume status", "claim", "claim status"]);

    // The states a crash leaves behind: after 1, 2 and 3 writes.
    let interrupted = [
        (
            1,
            mk_volume("volume", "1Gi").bound_to("claim", "uid").ann(BBC),
            mk_claim("claim", "uid", "1Gi"),
        ),
        (
            2,
            mk_volume("volume", "1Gi")
                .bound_to("claim", "uid")
                .phase(BOUND)
                .ann(BBC),
            mk_claim("claim", "uid", "1Gi"),
        ),
        (
            3,
            mk_volume("volume", "1Gi")
                .bound_to("claim", "uid")
                .phase(BOUND)
                .ann(BBC),
            mk_claim("claim", "uid", "1Gi")
                .volume("volume")
                .ann(BBC)
                .ann(BC),
        ),
    ];
    for (crash_at, expected_volume, expected_claim) in interrupted {
        let mut cluster = start.clone();
        let mut writes = 0;
        let stopped = plan
            .apply(|write| {
                if writes == crash_at {
                    return Err("controller crashed");
                }
                writes += 1;
                cluster.apply(write).map_err(|_| "rejected")
            })
            .expect_err("the crash stops the plan");
        assert_eq!(stopped.failed_at, crash_at);
        assert_cluster(
            &format!("after {crash_at} writes"),
            &cluster,
            &[expected_volume],
            &[expected_claim],
        );

        // The restarted controller syncs the claim again.
        let claim = cluster.claim(NS, "claim").cloned().expect("claim");
        let resumed = sync_claim(&claim, &ClaimContext::new(cluster.volumes(), &options));
        assert_eq!(resumed.then, Then::Done);
        assert_eq!(
            resumed.writes.len(),
            4 - crash_at,
            "only the missing writes"
        );
        resumed.apply(|w| cluster.apply(w)).expect("applies");
        let (volume, claim) = bound_pair();
        assert_cluster(
            &format!("resumed after {crash_at}"),
            &cluster,
            &[volume],
            &[claim],
        );
    }
}

/// Whatever the crash point, syncing the volume first also converges (the volume side waits
/// for `syncClaim`, which finishes).
#[test]
fn interrupted_binds_converge_under_periodic_resync() {
    let options = SyncOptions::default();
    for crash_at in 0..=4 {
        let mut cluster = ObjectSet::new(
            [mk_volume("volume", "1Gi")],
            [mk_claim("claim", "uid", "1Gi")],
        );
        let claim = cluster.claim(NS, "claim").cloned().expect("claim");
        let plan = sync_claim(&claim, &ClaimContext::new(cluster.volumes(), &options));
        let mut writes = 0;
        let _ = plan.apply(|write| {
            if writes == crash_at {
                return Err(());
            }
            writes += 1;
            cluster.apply(write).map_err(|_| ())
        });
        sync_until_stable(&mut cluster, &[], &options, 5);
        let (volume, claim) = bound_pair();
        assert_cluster(
            &format!("crash at {crash_at}"),
            &cluster,
            &[volume],
            &[claim],
        );
    }
}

/// 10-1: a claim binds a Pending volume once the volume has been made Available.
#[test]
fn multi_sync_10_1_successful_bind() {
    let mut cluster = ObjectSet::new(
        [mk_volume("volume10-1", "1Gi").phase(PENDING)],
        [mk_claim("claim10-1", "uid10-1", "1Gi")],
    );
    sync_until_stable(&mut cluster, &[], &SyncOptions::default(), 10);
    assert_cluster(
        "10-1",
        &cluster,
        &[mk_volume("volume10-1", "1Gi")
            .bound_to("claim10-1", "uid10-1")
            .phase(BOUND)
            .ann(BBC)],
        &[mk_claim("claim10-1", "uid10-1", "1Gi")
            .volume("volume10-1")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
}

/// 10-2: two controllers bound two volumes to one claim; the one the claim does not name is
/// rolled back.
#[test]
fn multi_sync_10_2_bind_race_is_rolled_back() {
    let mut cluster = ObjectSet::new(
        [
            mk_volume("volume10-2-1", "1Gi")
                .bound_to("claim10-2", "uid10-2")
                .phase(BOUND)
                .ann(BBC),
            mk_volume("volume10-2-2", "1Gi")
                .bound_to("claim10-2", "uid10-2")
                .phase(BOUND)
                .ann(BBC),
        ],
        [mk_claim("claim10-2", "uid10-2", "1Gi")
            .volume("volume10-2-1")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
    sync_until_stable(&mut cluster, &[], &SyncOptions::default(), 10);
    assert_cluster(
        "10-2",
        &cluster,
        &[
            mk_volume("volume10-2-1", "1Gi")
                .bound_to("claim10-2", "uid10-2")
                .phase(BOUND)
                .ann(BBC),
            mk_volume("volume10-2-2", "1Gi"),
        ],
        &[mk_claim("claim10-2", "uid10-2", "1Gi")
            .volume("volume10-2-1")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
}

/// 5-2: a new claim is bound to the free volume.
#[test]
fn controller_5_2_added_claim_is_bound() {
    let mut cluster = ObjectSet::new([mk_volume("volume5-2", "1Gi")], []);
    cluster.put_claim(mk_claim("claim5-2", "uid5-2", "1Gi"));
    sync_until_stable(&mut cluster, &[], &SyncOptions::default(), 10);
    assert_cluster(
        "5-2",
        &cluster,
        &[mk_volume("volume5-2", "1Gi")
            .bound_to("claim5-2", "uid5-2")
            .phase(BOUND)
            .ann(BBC)],
        &[mk_claim("claim5-2", "uid5-2", "1Gi")
            .volume("volume5-2")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
}

/// 5-3: deleting a bound claim releases its (Retain) volume.
#[test]
fn controller_5_3_deleted_claim_releases_the_volume() {
    let mut cluster = ObjectSet::new(
        [mk_volume("volume5-3", "10Gi")
            .bound_to("claim5-3", "uid5-3")
            .phase(BOUND)
            .ann(BBC)],
        [mk_claim("claim5-3", "uid5-3", "1Gi")
            .volume("volume5-3")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
    cluster.delete_claim(NS, "claim5-3").expect("existed");
    sync_until_stable(&mut cluster, &[], &SyncOptions::default(), 10);
    assert_cluster(
        "5-3",
        &cluster,
        &[mk_volume("volume5-3", "10Gi")
            .bound_to("claim5-3", "uid5-3")
            .phase(RELEASED)
            .ann(BBC)],
        &[],
    );
}

/// 5-4: deleting a bound volume makes its claim Lost, with one `ClaimLost` warning.
#[test]
fn controller_5_4_deleted_volume_loses_the_claim() {
    let mut cluster = ObjectSet::new(
        [mk_volume("volume5-4", "1Gi")
            .bound_to("claim5-4", "uid5-4")
            .phase(BOUND)],
        [mk_claim("claim5-4", "uid5-4", "1Gi")
            .volume("volume5-4")
            .phase(BOUND)
            .ann(BBC)
            .ann(BC)],
    );
    cluster.delete_volume("volume5-4").expect("existed");
    sync_until_stable(&mut cluster, &[], &SyncOptions::default(), 10);
    assert_cluster(
        "5-4",
        &cluster,
        &[],
        &[mk_claim("claim5-4", "uid5-4", "1Gi")
            .volume("volume5-4")
            .phase(LOST)
            .ann(BBC)
            .ann(BC)],
    );
    let reasons: Vec<_> = cluster.events().iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["ClaimLost"], "recorded once, on the phase change");
}

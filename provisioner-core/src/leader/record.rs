//! The leader election record, in the two encodings client-go uses: a Lease's `spec`, and
//! the JSON annotation `control-plane.alpha.kubernetes.io/leader` of the Endpoints lock that
//! client-go (and the Go provisioner library up to v8) used before Leases. Pure data.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The annotation holding the record on an Endpoints lock, as client-go's `EndpointsLock`
/// wrote it.
pub const ENDPOINTS_RECORD_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Who holds a leader lock, for how long, and how often it changed hands.
///
/// The times are informational: no participant compares its clock with them (see
/// [`Election`](super::Election)). Serialized, it is client-go's `LeaderElectionRecord`
/// (`holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`,
/// `leaderTransitions`), so Go and Rust replicas can share an Endpoints lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// The holder; empty when nobody holds the lock (it was released).
    #[serde(default)]
    pub holder_identity: String,
    /// How long, from when others observe a change of the record, the holder keeps the
    /// lock without renewing it.
    #[serde(default)]
    pub lease_duration_seconds: i32,
    /// When the current holder acquired the lock, by its clock.
    #[serde(default, with = "go_time")]
    pub acquire_time: Option<Timestamp>,
    /// When the current holder last renewed, by its clock.
    #[serde(default, with = "go_time")]
    pub renew_time: Option<Timestamp>,
    /// How many times the lock changed hands.
    #[serde(default)]
    pub leader_transitions: i32,
}

impl LeaderRecord {
    /// Reads a record from an Endpoints annotation value.
    pub fn from_annotation(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }

    /// The annotation value of this record.
    pub fn to_annotation(&self) -> String {
        // A struct of strings, integers and optional timestamps always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a record from a Lease's spec (absent fields read as empty, as in client-go).
    pub fn from_lease_spec(spec: &LeaseSpec) -> Self {
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.as_ref().map(|time| time.0),
            renew_time: spec.renew_time.as_ref().map(|time| time.0),
            leader_transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// The Lease spec of this record (an empty holder is written as absent, as client-go
    /// does when releasing).
    pub fn to_lease_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()).filter(|holder| !holder.is_empty()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.leader_transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether somebody holds the lock according to this record.
    pub fn is_held(&self) -> bool {
        !self.holder_identity.is_empty()
    }
}

/// `metav1.Time` as Go encodes it: RFC 3339 in UTC with whole seconds, `null` for the zero
/// time. Any RFC 3339 value is accepted when reading.
mod go_time {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        time: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => {
                serializer.serialize_str(&time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.filter(|text| !text.is_empty())
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<Timestamp> {
        Some(text.parse().unwrap())
    }

    fn held() -> LeaderRecord {
        LeaderRecord {
            holder_identity: "node-a_5f0c".into(),
            lease_duration_seconds: 15,
            acquire_time: at("2024-05-01T10:00:00Z"),
            renew_time: at("2024-05-01T10:00:08Z"),
            leader_transitions: 3,
        }
    }

    #[test]
    fn reads_what_client_go_writes_into_the_endpoints_annotation() {
        let written_by_go = r#"{"holderIdentity":"nfs-provisioner-7d9f_0b1c4a2e-5e8f-11ee-8c99-0242ac120002","leaseDurationSeconds":15,"acquireTime":"2023-10-02T08:15:30Z","renewTime":"2023-10-02T09:01:12Z","leaderTransitions":2}"#;
        let record = LeaderRecord::from_annotation(written_by_go).unwrap();
        assert_eq!(
            record.holder_identity,
            "nfs-provisioner-7d9f_0b1c4a2e-5e8f-11ee-8c99-0242ac120002"
        );
        assert_eq!(record.lease_duration_seconds, 15);
        assert_eq!(record.acquire_time, at("2023-10-02T08:15:30Z"));
        assert_eq!(record.renew_time, at("2023-10-02T09:01:12Z"));
        assert_eq!(record.leader_transitions, 2);
    }

    #[test]
    fn reads_newer_client_go_fields_and_null_times() {
        let released = r#"{"holderIdentity":"","leaseDurationSeconds":1,"acquireTime":null,"renewTime":"2023-10-02T09:01:12.123456Z","leaderTransitions":4,"strategy":"","preferredHolder":""}"#;
        let record = LeaderRecord::from_annotation(released).unwrap();
        assert!(!record.is_held());
        assert_eq!(record.acquire_time, None);
        assert_eq!(record.renew_time, at("2023-10-02T09:01:12.123456Z"));
        assert_eq!(record.leader_transitions, 4);
    }

    #[test]
    fn writes_go_field_names_and_second_precision_utc_times() {
        let mut record = held();
        record.renew_time = at("2024-05-01T10:00:08.987Z");
        let json: serde_json::Value = serde_json::from_str(&record.to_annotation()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "holderIdentity": "node-a_5f0c",
                "leaseDurationSeconds": 15,
                "acquireTime": "2024-05-01T10:00:00Z",
                "renewTime": "2024-05-01T10:00:08Z",
                "leaderTransitions": 3,
            })
        );
    }

    #[test]
    fn annotation_round_trips() {
        let record = held();
        assert_eq!(
            LeaderRecord::from_annotation(&record.to_annotation()).unwrap(),
            record
        );
    }

    #[test]
    fn lease_spec_round_trips_and_released_holder_is_absent() {
        let record = held();
        assert_eq!(
            LeaderRecord::from_lease_spec(&record.to_lease_spec()),
            record
        );

        let released = LeaderRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            ..held()
        };
        let spec = released.to_lease_spec();
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(LeaderRecord::from_lease_spec(&spec), released);
    }

    #[test]
    fn an_empty_lease_reads_as_unheld() {
        let record = LeaderRecord::from_lease_spec(&LeaseSpec::default());
        assert_eq!(record, LeaderRecord::default());
        assert!(!record.is_held());
    }
}

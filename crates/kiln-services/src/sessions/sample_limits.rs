//! A sample may ask for its own disk size: `disk_mib` in its record (beside `sample_image`,
//! among the fields Kiln keeps verbatim), for a repository or test suite that needs more
//! than `runtime.disk_mib`, or to give a small task a small disk. It is bounded by
//! `runtime.max_disk_mib`; a sample asking for more (or for something that is not a size)
//! cannot be started here, and says why.
use kiln_runtime::Limits;
use kiln_store::SampleRecord;

use crate::error::{ServiceError, ServiceResult};

/// The record field.
pub const DISK_MIB: &str = "disk_mib";

/// The limits of the sample's sessions: `base`, with the sample's disk size when it asks
/// for one. `max_disk_bytes` bounds what it may ask.
pub fn sample_limits(
    record: &SampleRecord,
    base: &Limits,
    max_disk_bytes: u64,
) -> ServiceResult<Limits> {
    let Some(asked) = record.extra.get(DISK_MIB) else {
        return Ok(*base);
    };
    let max_mib = max_disk_bytes >> 20;
    let mib = asked
        .as_u64()
        .filter(|mib| (1..=max_mib).contains(mib))
        .ok_or_else(|| {
            ServiceError::Conflict(format!(
                "sample {} asks for a disk of {asked} MiB ({DISK_MIB}); this server gives a \
                 sample between 1 and {max_mib} MiB (runtime.max_disk_mib)",
                record.instance_id
            ))
        })?;
    Ok(Limits {
        disk_bytes: Some(mib << 20),
        ..*base
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(extra: serde_json::Value) -> SampleRecord {
        let mut record: SampleRecord = serde_json::from_value(serde_json::json!({
            "instance_id": "x__y-1", "repo": "x/y", "base_commit": "abc"
        }))
        .unwrap();
        record.extra = extra.as_object().cloned().unwrap_or_default();
        record
    }

    #[test]
    fn a_sample_overrides_the_disk_within_the_maximum() {
        let base = Limits::default();
        let max = 20 << 30;
        assert_eq!(
            sample_limits(&record(serde_json::json!({})), &base, max).unwrap(),
            base
        );
        let small = sample_limits(&record(serde_json::json!({"disk_mib": 64})), &base, max);
        assert_eq!(small.unwrap().disk_bytes, Some(64 << 20));
        let large = sample_limits(&record(serde_json::json!({"disk_mib": 20480})), &base, max);
        assert_eq!(large.unwrap().disk_bytes, Some(20 << 30));
        for bad in [
            serde_json::json!(20481),
            serde_json::json!(0),
            serde_json::json!(-5),
            serde_json::json!("1G"),
            serde_json::json!(1.5),
        ] {
            let err = sample_limits(&record(serde_json::json!({"disk_mib": bad})), &base, max)
                .unwrap_err();
            assert!(
                matches!(&err, ServiceError::Conflict(m) if m.contains("runtime.max_disk_mib")),
                "{bad}: {err:?}"
            );
        }
    }
}

//! Settings reloads in the audit trail: the AI catalog and the rate-limit policy, reloaded
//! by other processes, arrive as `settings.reloaded` events and are recorded beside flag
//! changes as subject `settings/<component>`, source `file`, with the file's SHA-256 and
//! the outcome (`{"path": ..., "applied": ..., "error": ...}`) as the new definition.

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::events::catalog::decode;
use duovarsity_common::events::consumer::Handler;
use duovarsity_proto::events::{Envelope, SettingsReloaded};
use sqlx::{Any, Transaction};

use crate::store::flags::{FlagChangeRecord, record_change};

/// The subject under which a component's reloads are listed.
pub fn subject(component: &str) -> String {
    format!("settings/{component}")
}

pub struct SettingsAudit;

#[async_trait]
impl Handler for SettingsAudit {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let reloaded: SettingsReloaded = decode(envelope)?;
        let outcome = serde_json::json!({
            "path": reloaded.path,
            "applied": reloaded.applied,
            "error": reloaded.error,
        });
        let changed_at = envelope
            .occurred_at
            .as_ref()
            .map_or_else(duovarsity_common::time::now_millis, |t| {
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
            });
        let change = FlagChangeRecord {
            id: envelope.event_id.clone(),
            key: subject(&reloaded.component),
            actor: if reloaded.replica.is_empty() {
                reloaded.component.clone()
            } else {
                format!("{}@{}", reloaded.component, reloaded.replica)
            },
            source: "file".to_string(),
            checksum: reloaded.checksum,
            previous: None,
            definition: Some(outcome.to_string()),
            changed_at,
        };
        record_change(tx, &change).await
    }
}

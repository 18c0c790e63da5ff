//! Rows to protobuf: the one place where stored category names meet the wire enum,
//! through prost's generated names ([`StoredName`]).

use duovarsity_common::Error;
use duovarsity_common::enums::StoredName;
use duovarsity_common::time::timestamp_from_millis;
use duovarsity_proto::notification::{Category, Notification};

use crate::store::NotificationRow;

pub fn notification_to_proto(row: &NotificationRow) -> Result<Notification, Error> {
    Ok(Notification {
        id: row.id.clone(),
        category: Category::from_stored("notifications.category", &row.category)? as i32,
        title: row.title.clone(),
        body: row.body.clone(),
        created_at: Some(timestamp_from_millis(row.created_at)),
        read_at: row.read_at.map(timestamp_from_millis),
        seq: row.seq,
    })
}

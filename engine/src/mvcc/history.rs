//! The store's history as watchers see it: every change from a revision on, read back from etcd's
//! `key` bucket (so it reaches as far back as the last compaction), and the `prev_kv` a watcher
//! may ask for.

use keelson_proto::mvccpb::event::EventType;
use keelson_proto::mvccpb::{Event, KeyValue};
use prost::Message;

use super::error::{MvccError, Result};
use super::read::{self, Revisions, bucket, corrupt};
use super::revision::Revision;
use super::schema::KEY;
use crate::pagefile::View;

/// The events of revisions `from` on — of at most `max_revisions` revisions — in revision order,
/// as etcd sends them to a watcher that starts in the past. Fails if `from` is below the compacted
/// revision.
pub fn history(
    view: &dyn View,
    revs: Revisions,
    from: i64,
    max_revisions: usize,
) -> Result<Vec<Event>> {
    if from < revs.compacted {
        return Err(MvccError::Compacted {
            requested: from,
            compacted: revs.compacted,
        });
    }
    let keys = bucket(view, KEY)?;
    let mut cursor = keys.cursor();
    let mut entry = cursor.seek(&Revision::new(from.max(1), 0).key(false))?;
    let mut events = Vec::new();
    let mut revisions = 0;
    let mut last_main = None;
    while let Some((k, v)) = entry {
        let (rev, tombstone) =
            Revision::parse_key(k).ok_or_else(|| corrupt("a key bucket key is not a revision"))?;
        if last_main != Some(rev.main) {
            if revisions == max_revisions {
                break;
            }
            revisions += 1;
            last_main = Some(rev.main);
        }
        let mut kv = KeyValue::decode(v.unwrap_or_default())
            .map_err(|_| corrupt("a KeyValue does not decode"))?;
        let kind = if tombstone {
            // A deletion's record holds only the key; the event carries its revision too.
            kv.mod_revision = rev.main;
            EventType::Delete
        } else {
            EventType::Put
        };
        events.push(Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        entry = cursor.next()?;
    }
    Ok(events)
}

/// The `prev_kv` etcd attaches to `event` for a watcher that asks: the key as it was in the
/// revision before the event's, unless the event created the key or that revision is compacted.
pub fn prev_kv(view: &dyn View, revs: Revisions, event: &Event) -> Result<Option<KeyValue>> {
    let Some(kv) = &event.kv else { return Ok(None) };
    let created = event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
    let before = kv.mod_revision - 1;
    if created || before < revs.compacted {
        return Ok(None);
    }
    read::get_at(view, &kv.key, before)
}

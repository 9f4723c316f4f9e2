//! sea-orm entities, one per table created by the `migration` crate, and ([`message`]) the rows
//! in their protobuf form.
//!
//! Relations are not declared: the store joins explicitly, and every query is written out in
//! `store`, where its locking matters.

pub mod change_feed_horizon;
pub mod lead;
pub mod meeting;
pub mod meeting_change;
pub mod meeting_reminder;
pub mod message;
pub mod sync_run;
pub mod webhook_event;

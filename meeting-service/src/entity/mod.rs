//! sea-orm entities, one per table created by the `migration` crate.
//!
//! Relations are not declared: the store joins explicitly, and every query is written out in
//! `store`, where its locking matters.

pub mod lead;
pub mod meeting;
pub mod meeting_reminder;
pub mod webhook_event;

//! The rules, as plain functions over plain types: no database, no clock (`now` is passed in).
//!
//! - `event`: turns a received protobuf event into a validated [`event::InviteeEvent`] or says
//!   why it cannot be applied, and derives the inbox's dedupe key.
//! - `meeting`: how an invitee event changes a meeting, so that any delivery order converges.
//! - `reminders`: which reminders a meeting should have, and how to get there from the rows it has.
//! - `lead`: e-mail normalisation and the lead status a meeting implies.
//! - `change`: which change of a meeting the change feed records.

pub mod change;
pub mod event;
pub mod lead;
pub mod meeting;
pub mod reminders;

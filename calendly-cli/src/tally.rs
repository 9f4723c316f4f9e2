//! What became of each invitee of a back-fill, and the running count of it: what the back-fill
//! produces and the progress display shows.

/// One invitee's result, from its events' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteeResult {
    Created,
    Updated,
    Unchanged,
    Failed,
}

/// The counts of a run so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub scheduled_events: u64,
    pub invitees: u64,
    pub events_sent: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Events that changed what the meeting service shows of a meeting: for a reconcile, the
    /// webhooks that had not arrived.
    pub events_changed: u64,
}

impl Tally {
    pub fn add(&mut self, result: InviteeResult) {
        let counter = match result {
            InviteeResult::Created => &mut self.created,
            InviteeResult::Updated => &mut self.updated,
            InviteeResult::Unchanged => &mut self.unchanged,
            InviteeResult::Failed => &mut self.failed,
        };
        *counter += 1;
    }

    pub fn counts(&self) -> String {
        format!(
            "created {}, updated {}, unchanged {}, failed {}",
            self.created, self.updated, self.unchanged, self.failed
        )
    }
}

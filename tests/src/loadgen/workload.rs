//! What the load generator sends: distinct, real-shape Calendly deliveries made from the fixtures
//! by giving every invitee and scheduled event fresh UUIDs and every envelope its own
//! `created_at`, in an order where follow-ups (cancels, reschedules, no-shows) come after the
//! booking they refer to.
//!
//! Every UUID of a run starts with the run's 8-hex-digit id, so `--verify-database` can find
//! exactly this run's rows in a database that also holds other runs or a pre-loaded history.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};

const CREATED: &str = include_str!("../../fixtures/calendly/fixtures/invitee-created-one-on-one.json");
const CANCELED: &str = include_str!("../../fixtures/calendly/fixtures/invitee-canceled-by-invitee.json");
const RESCHEDULE_OLD: &str = include_str!("../../fixtures/calendly/fixtures/reschedule-canceled-old.json");
const RESCHEDULE_NEW: &str = include_str!("../../fixtures/calendly/fixtures/reschedule-created-new.json");
const NO_SHOW: &str = include_str!("../../fixtures/calendly/fixtures/invitee-no-show-created.json");

/// Identities in the fixtures that each generated delivery replaces.
mod ids {
    pub const BOOKING_INVITEE: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    pub const BOOKING_EVENT: &str = "e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f";
    pub const BOOKING_EMAIL: &str = "jordan.ellis@example.com";
    pub const BOOKING_AT: &str = "2030-03-04T15:02:12.000000Z";
    pub const CANCEL_AT: &str = "2030-03-06T09:14:04.000000Z";
    pub const OLD_INVITEE: &str = "c5e7a9b1-3d4f-4a62-8d8f-0b2c4e6a8c03";
    pub const OLD_EVENT: &str = "b3d5f7a9-1c2e-4f40-9b6d-8f0a2c4e6a91";
    pub const NEW_INVITEE: &str = "e9b1d3f5-7a8c-4ca6-8b2c-4f6a8c0e2a27";
    pub const NEW_EVENT: &str = "d7f9b1c3-5e6a-4b84-9f0a-2d4e6a8c0e15";
    pub const RESCHEDULE_EMAIL: &str = "taylor.brooks@example.com";
    pub const RESCHEDULE_AT: &str = "2030-03-08T11:20:45.000000Z";
    pub const NO_SHOW_INVITEE: &str = "3d5f7a9c-1e2b-4c4e-b6d8-0f2c4e6a8b77";
    pub const NO_SHOW_EVENT: &str = "2c4e6a8c-0e1f-4b3d-a5c7-9e1b3d5f7a65";
    pub const NO_SHOW_MARK: &str = "4e6a8c0e-2f3b-4d5f-8c7e-1a3c5e7a9c89";
    pub const NO_SHOW_EMAIL: &str = "riley.morgan@example.com";
    pub const NO_SHOW_AT: &str = "2030-03-14T15:41:10.000000Z";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Only `invitee.created`.
    Created,
    /// Bookings, cancels of earlier bookings, reschedule pairs and no-shows.
    Realistic,
}

/// What a valid delivery does to its invitee's meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Book,
    Cancel,
    /// The old half of a reschedule.
    RescheduleCancel,
    NoShow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Correctly signed; must be stored exactly once once acknowledged.
    Valid(Effect),
    /// Signed with the wrong key: must be rejected (401) and leave no trace.
    BadSignature,
    /// More than 1 MiB: must be rejected (413) and leave no trace.
    Oversized,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub kind: Kind,
    pub event_type: &'static str,
    pub invitee_uri: String,
    pub body: Arc<Vec<u8>>,
}

/// One entry of the send schedule: a delivery, sent `copies` times at once.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub delivery: usize,
    pub copies: u32,
    /// Whether this send repeats a delivery already scheduled earlier (`--duplicates`).
    pub repeat: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub requests: usize,
    pub mix: Mix,
    pub duplicates: f64,
    pub invalid_signatures: f64,
    pub oversized: f64,
    pub copies: u32,
    pub seed: u64,
    /// Fraction of bookings whose invitee has the e-mail of a pre-loaded lead
    /// (`lead<k>@example.com`, k in 1..=`lead_pool`), so their meetings link to it.
    pub lead_share: f64,
    pub lead_pool: usize,
}

pub struct Workload {
    /// 8 hex digits that start every UUID of this run.
    pub run_id: String,
    pub deliveries: Vec<Delivery>,
    pub jobs: Vec<Job>,
}

impl Workload {
    pub fn generate(options: &Options) -> Self {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let run_id = format!("{:08x}", rng.random::<u32>());
        let mut builder = Builder {
            run_id: run_id.clone(),
            rng,
            lead_share: options.lead_share.clamp(0.0, 1.0),
            lead_pool: options.lead_pool.max(1),
            deliveries: Vec::new(),
            slots: Vec::new(),
            sequence: 0,
        };
        let clamp = |f: f64| f.clamp(0.0, 1.0);
        let invalid = (options.requests as f64 * clamp(options.invalid_signatures)).round() as usize;
        let oversized = (options.requests as f64 * clamp(options.oversized)).round() as usize;
        let valid_target = options.requests.saturating_sub(invalid + oversized);

        let mut scenario = 0usize;
        let mut valid = 0usize;
        while valid < valid_target {
            let slot = scenario as f64;
            valid += match options.mix {
                Mix::Created => builder.booking(slot),
                Mix::Realistic => builder.realistic_scenario(slot),
            };
            scenario += 1;
        }
        let span = scenario.max(1) as f64;
        for _ in 0..invalid {
            let slot = builder.rng.random_range(0.0..span);
            builder.rejected(slot, Kind::BadSignature);
        }
        if oversized > 0 {
            // One padded body shared by every oversized request: generating 1 MiB each time
            // would measure the generator.
            let (uri, body) = builder.oversized_body();
            for _ in 0..oversized {
                let slot = builder.rng.random_range(0.0..span);
                builder.push_shared(
                    slot,
                    Kind::Oversized,
                    "invitee.created",
                    uri.clone(),
                    body.clone(),
                );
            }
        }
        // Re-sends of valid deliveries, later in the run, as a retrying sender would.
        let valid_ids: Vec<(usize, f64)> = builder
            .slots
            .iter()
            .filter(|(_, job)| matches!(builder.deliveries[job.delivery].kind, Kind::Valid(_)))
            .map(|(slot, job)| (job.delivery, *slot))
            .collect();
        let repeats = (valid_ids.len() as f64 * options.duplicates.max(0.0)).round() as usize;
        for _ in 0..repeats {
            let (delivery, slot) = valid_ids[builder.rng.random_range(0..valid_ids.len())];
            let later = slot + builder.rng.random_range(1.0..100.0);
            builder.slots.push((
                later,
                Job {
                    delivery,
                    copies: 1,
                    repeat: true,
                },
            ));
        }
        builder.slots.sort_by(|a, b| a.0.total_cmp(&b.0));
        let copies = options.copies.max(1);
        let jobs = builder
            .slots
            .into_iter()
            .map(|(_, job)| Job { copies, ..job })
            .collect();
        Self {
            run_id,
            deliveries: builder.deliveries,
            jobs,
        }
    }

    /// Requests the schedule sends when nothing is retried.
    pub fn planned_requests(&self) -> usize {
        self.jobs.iter().map(|job| job.copies as usize).sum()
    }

    /// Valid deliveries by invitee URI, in schedule order of creation.
    pub fn by_invitee(&self) -> HashMap<&str, Vec<usize>> {
        let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
        for (id, delivery) in self.deliveries.iter().enumerate() {
            if matches!(delivery.kind, Kind::Valid(_)) {
                map.entry(delivery.invitee_uri.as_str()).or_default().push(id);
            }
        }
        map
    }

    /// The `LIKE` pattern matching this run's invitee URIs.
    pub fn uri_pattern(&self) -> String {
        format!("%/invitees/{}-%", self.run_id)
    }
}

/// The status a meeting must have once all of `effects` were applied, in any order.
pub fn implied_status(effects: &[Effect]) -> &'static str {
    if effects.contains(&Effect::RescheduleCancel) {
        "rescheduled"
    } else if effects.contains(&Effect::Cancel) {
        "canceled"
    } else if effects.contains(&Effect::NoShow) {
        "no_show"
    } else {
        "scheduled"
    }
}

struct Builder {
    run_id: String,
    rng: StdRng,
    lead_share: f64,
    lead_pool: usize,
    deliveries: Vec<Delivery>,
    slots: Vec<(f64, Job)>,
    sequence: i64,
}

struct Identity {
    invitee: String,
    event: String,
    email: String,
}

impl Builder {
    fn uuid(&mut self) -> String {
        let random = uuid::Uuid::from_u128(self.rng.random::<u128>()).to_string();
        format!("{}{}", self.run_id, &random[8..])
    }

    fn identity(&mut self, local_part: &str) -> Identity {
        let invitee = self.uuid();
        let email = if self.lead_share > 0.0 && self.rng.random_bool(self.lead_share) {
            format!("lead{}@example.com", self.rng.random_range(1..=self.lead_pool))
        } else {
            format!("{local_part}+{}@example.com", &invitee[..18])
        };
        Identity {
            event: self.uuid(),
            email,
            invitee,
        }
    }

    /// A distinct envelope time: the template's, plus this event's sequence number in µs.
    fn envelope_time(&mut self, template: &str) -> String {
        self.sequence += 1;
        let base: DateTime<Utc> = template.parse().expect("fixture time");
        (base + Duration::microseconds(self.sequence))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    fn push(&mut self, slot: f64, kind: Kind, event_type: &'static str, invitee: &str, body: String) {
        let uri = format!(
            "https://api.calendly.com/scheduled_events/{}/invitees/{invitee}",
            uri_event_of(&body, invitee)
        );
        self.push_shared(slot, kind, event_type, uri, Arc::new(body.into_bytes()));
    }

    fn push_shared(
        &mut self,
        slot: f64,
        kind: Kind,
        event_type: &'static str,
        invitee_uri: String,
        body: Arc<Vec<u8>>,
    ) {
        self.deliveries.push(Delivery {
            kind,
            event_type,
            invitee_uri,
            body,
        });
        self.slots.push((
            slot,
            Job {
                delivery: self.deliveries.len() - 1,
                copies: 1,
                repeat: false,
            },
        ));
    }

    fn created_body(&mut self, who: &Identity) -> String {
        let at = self.envelope_time(ids::BOOKING_AT);
        replace_all(
            CREATED,
            &[
                (ids::BOOKING_INVITEE, &who.invitee),
                (ids::BOOKING_EVENT, &who.event),
                (ids::BOOKING_EMAIL, &who.email),
                (ids::BOOKING_AT, &at),
            ],
        )
    }

    /// One booking; answers the number of valid deliveries added.
    fn booking(&mut self, slot: f64) -> usize {
        let who = self.identity("jordan.ellis");
        let body = self.created_body(&who);
        self.push(
            slot,
            Kind::Valid(Effect::Book),
            "invitee.created",
            &who.invitee,
            body,
        );
        1
    }

    fn follow_up_slot(&mut self, slot: f64) -> f64 {
        slot + self.rng.random_range(3.0..40.0)
    }

    fn realistic_scenario(&mut self, slot: f64) -> usize {
        let roll: f64 = self.rng.random();
        if roll < 0.60 {
            self.booking(slot)
        } else if roll < 0.80 {
            // A booking canceled later by the invitee.
            let who = self.identity("jordan.ellis");
            let body = self.created_body(&who);
            self.push(
                slot,
                Kind::Valid(Effect::Book),
                "invitee.created",
                &who.invitee,
                body,
            );
            let at = self.envelope_time(ids::CANCEL_AT);
            let cancel = replace_all(
                CANCELED,
                &[
                    (ids::BOOKING_INVITEE, &who.invitee),
                    (ids::BOOKING_EVENT, &who.event),
                    (ids::BOOKING_EMAIL, &who.email),
                    (ids::CANCEL_AT, &at),
                ],
            );
            let later = self.follow_up_slot(slot);
            self.push(
                later,
                Kind::Valid(Effect::Cancel),
                "invitee.canceled",
                &who.invitee,
                cancel,
            );
            2
        } else if roll < 0.92 {
            // A booking, later rescheduled: the old invitee canceled, a new one created.
            let old = self.identity("taylor.brooks");
            let new_invitee = self.uuid();
            let new_event = self.uuid();
            let body = self.created_body(&old);
            self.push(
                slot,
                Kind::Valid(Effect::Book),
                "invitee.created",
                &old.invitee,
                body,
            );
            let at = self.envelope_time(ids::RESCHEDULE_AT);
            let replacements = [
                (ids::OLD_INVITEE, old.invitee.as_str()),
                (ids::OLD_EVENT, old.event.as_str()),
                (ids::NEW_INVITEE, new_invitee.as_str()),
                (ids::NEW_EVENT, new_event.as_str()),
                (ids::RESCHEDULE_EMAIL, old.email.as_str()),
                (ids::RESCHEDULE_AT, at.as_str()),
            ];
            let cancel_old = replace_all(RESCHEDULE_OLD, &replacements);
            let at_new = self.envelope_time(ids::RESCHEDULE_AT);
            let mut replacements_new = replacements;
            replacements_new[5].1 = at_new.as_str();
            let create_new = replace_all(RESCHEDULE_NEW, &replacements_new);
            let later = self.follow_up_slot(slot);
            self.push(
                later,
                Kind::Valid(Effect::RescheduleCancel),
                "invitee.canceled",
                &old.invitee,
                cancel_old,
            );
            self.push(
                later + 0.5,
                Kind::Valid(Effect::Book),
                "invitee.created",
                &new_invitee,
                create_new,
            );
            3
        } else {
            // A booking whose invitee does not show up.
            let who = self.identity("riley.morgan");
            let body = self.created_body(&who);
            self.push(
                slot,
                Kind::Valid(Effect::Book),
                "invitee.created",
                &who.invitee,
                body,
            );
            let mark = self.uuid();
            let at = self.envelope_time(ids::NO_SHOW_AT);
            let no_show = replace_all(
                NO_SHOW,
                &[
                    (ids::NO_SHOW_INVITEE, &who.invitee),
                    (ids::NO_SHOW_EVENT, &who.event),
                    (ids::NO_SHOW_MARK, &mark),
                    (ids::NO_SHOW_EMAIL, &who.email),
                    (ids::NO_SHOW_AT, &at),
                ],
            );
            let later = self.follow_up_slot(slot);
            self.push(
                later,
                Kind::Valid(Effect::NoShow),
                "invitee_no_show.created",
                &who.invitee,
                no_show,
            );
            2
        }
    }

    /// A booking body that is sent with a wrong signature.
    fn rejected(&mut self, slot: f64, kind: Kind) {
        let who = self.identity("mallory");
        let body = self.created_body(&who);
        self.push(slot, kind, "invitee.created", &who.invitee, body);
    }

    /// A valid booking padded with trailing whitespace to just over 1 MiB.
    fn oversized_body(&mut self) -> (String, Arc<Vec<u8>>) {
        let who = self.identity("oscar");
        let body = self.created_body(&who);
        let uri = format!(
            "https://api.calendly.com/scheduled_events/{}/invitees/{}",
            who.event, who.invitee
        );
        let mut body = body.into_bytes();
        body.resize(1024 * 1024 + 4096, b' ');
        (uri, Arc::new(body))
    }
}

fn replace_all(template: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "fixture lacks {from}");
        text = text.replace(from, to);
    }
    text
}

/// The scheduled event UUID in the invitee URI of `body` (`…/scheduled_events/<e>/invitees/<i>`).
fn uri_event_of(body: &str, invitee: &str) -> String {
    let needle = format!("/invitees/{invitee}\"");
    let end = body.find(&needle).expect("the invitee URI is in the body");
    let start = body[..end].rfind('/').expect("scheduled event segment") + 1;
    body[start..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mix: Mix) -> Options {
        Options {
            requests: 400,
            mix,
            duplicates: 0.1,
            invalid_signatures: 0.05,
            oversized: 0.01,
            copies: 1,
            seed: 7,
            lead_share: 0.5,
            lead_pool: 10,
        }
    }

    #[test]
    fn every_body_is_json_with_the_uri_it_claims() {
        let workload = Workload::generate(&options(Mix::Realistic));
        for delivery in &workload.deliveries {
            let json: serde_json::Value = serde_json::from_slice(&delivery.body).expect("JSON");
            assert_eq!(json["event"], delivery.event_type);
            assert_eq!(json["payload"]["uri"], delivery.invitee_uri.as_str());
            assert!(
                delivery
                    .invitee_uri
                    .contains(&format!("/invitees/{}-", workload.run_id))
            );
        }
    }

    #[test]
    fn follow_ups_come_after_their_booking_and_counts_add_up() {
        let workload = Workload::generate(&options(Mix::Realistic));
        let mut seen = std::collections::HashSet::new();
        for job in &workload.jobs {
            let delivery = &workload.deliveries[job.delivery];
            if let Kind::Valid(effect) = delivery.kind
                && !job.repeat
            {
                if matches!(effect, Effect::Cancel | Effect::RescheduleCancel | Effect::NoShow) {
                    assert!(
                        seen.contains(&delivery.invitee_uri),
                        "{effect:?} before its booking"
                    );
                }
                seen.insert(delivery.invitee_uri.clone());
            }
        }
        let first_sends = workload.jobs.iter().filter(|j| !j.repeat).count();
        assert!((400..=402).contains(&first_sends), "{first_sends}");
        let bad = workload
            .deliveries
            .iter()
            .filter(|d| d.kind == Kind::BadSignature)
            .count();
        assert_eq!(bad, 20);
    }
}

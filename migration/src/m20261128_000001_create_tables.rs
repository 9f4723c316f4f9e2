//! Leads, meetings, their reminders and the inbox of received webhook events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leads::Table)
                    .col(big_pk_auto(Leads::Id))
                    // Stored lower-cased and trimmed, so the unique index is case-insensitive.
                    .col(string_uniq(Leads::Email))
                    .col(string_null(Leads::Name))
                    .col(string(Leads::Status))
                    .col(timestamp_with_time_zone(Leads::CreatedAt))
                    .col(timestamp_with_time_zone(Leads::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Meetings::Table)
                    .col(big_pk_auto(Meetings::Id))
                    .col(big_integer_null(Meetings::LeadId))
                    // The scheduled event URI: shared by every invitee of a group event, so not unique.
                    .col(string(Meetings::CalendlyEventId))
                    // The invitee URI is the meeting's identity.
                    .col(string_uniq(Meetings::CalendlyInviteeId))
                    .col(string_null(Meetings::MeetingName))
                    // Unknown for the legacy payload shape that carries no scheduled event.
                    .col(timestamp_with_time_zone_null(Meetings::StartTime))
                    .col(timestamp_with_time_zone_null(Meetings::EndTime))
                    .col(string(Meetings::Status))
                    .col(string(Meetings::InviteeEmail))
                    .col(string(Meetings::InviteeName))
                    .col(string_null(Meetings::InviteeTimezone))
                    .col(text_null(Meetings::CancelReason))
                    .col(string_null(Meetings::CanceledBy))
                    .col(string_null(Meetings::CancelerType))
                    .col(timestamp_with_time_zone_null(Meetings::CanceledAt))
                    .col(string_null(Meetings::RescheduledFromInviteeId))
                    .col(string_null(Meetings::RescheduledToInviteeId))
                    .col(boolean(Meetings::NoShow))
                    // Calendly time of the last no-show mark or unmark applied.
                    .col(timestamp_with_time_zone_null(Meetings::NoShowChangedAt))
                    // Calendly time of the newest event applied; an older one never overwrites it.
                    .col(timestamp_with_time_zone(Meetings::LastEventAt))
                    .col(timestamp_with_time_zone(Meetings::CreatedAt))
                    .col(timestamp_with_time_zone(Meetings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_meetings_lead_id")
                            .from(Meetings::Table, Meetings::LeadId)
                            .to(Leads::Table, Leads::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_meetings_event_id",
            Meetings::Table,
            &[Meetings::CalendlyEventId],
        )
        .await?;
        create_index(
            manager,
            "idx_meetings_lead_id",
            Meetings::Table,
            &[Meetings::LeadId],
        )
        .await?;
        create_index(
            manager,
            "idx_meetings_invitee_email",
            Meetings::Table,
            &[Meetings::InviteeEmail],
        )
        .await?;
        create_index(
            manager,
            "idx_meetings_start_time",
            Meetings::Table,
            &[Meetings::StartTime, Meetings::Id],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(MeetingReminders::Table)
                    .col(big_pk_auto(MeetingReminders::Id))
                    .col(big_integer(MeetingReminders::MeetingId))
                    .col(string(MeetingReminders::ReminderType))
                    .col(timestamp_with_time_zone(MeetingReminders::ScheduledTime))
                    // The seed's flag, kept in step with `state = 'sent'`.
                    .col(boolean(MeetingReminders::Sent))
                    .col(string(MeetingReminders::State))
                    .col(string_null(MeetingReminders::ClaimedBy))
                    .col(timestamp_with_time_zone_null(MeetingReminders::ClaimExpiresAt))
                    .col(timestamp_with_time_zone_null(MeetingReminders::SentAt))
                    .col(integer(MeetingReminders::Attempts))
                    .col(timestamp_with_time_zone(MeetingReminders::CreatedAt))
                    .col(timestamp_with_time_zone(MeetingReminders::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_meeting_reminders_meeting_id")
                            .from(MeetingReminders::Table, MeetingReminders::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_meeting_reminders_meeting_type")
                    .table(MeetingReminders::Table)
                    .col(MeetingReminders::MeetingId)
                    .col(MeetingReminders::ReminderType)
                    .unique()
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_meeting_reminders_due",
            MeetingReminders::Table,
            &[MeetingReminders::State, MeetingReminders::ScheduledTime],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(big_pk_auto(WebhookEvents::Id))
                    .col(string(WebhookEvents::TrackingId))
                    .col(string(WebhookEvents::EventType))
                    // Derived from the event's identity, not the delivery: a retry has the same key.
                    .col(string_uniq(WebhookEvents::DedupeKey))
                    .col(string(WebhookEvents::Source))
                    .col(string_null(WebhookEvents::PayloadUri))
                    // Pruned after the retention period; identity and outcome stay.
                    .col(blob_null(WebhookEvents::RawBody))
                    // The translated protobuf, so a replay needs no JSON parser.
                    .col(blob(WebhookEvents::EventProto))
                    .col(timestamp_with_time_zone(WebhookEvents::ReceivedAt))
                    .col(timestamp_with_time_zone_null(WebhookEvents::ProcessedAt))
                    .col(string(WebhookEvents::Outcome))
                    .col(text_null(WebhookEvents::Error))
                    .col(integer(WebhookEvents::Attempts))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_webhook_events_outcome",
            WebhookEvents::Table,
            &[WebhookEvents::Outcome, WebhookEvents::Id],
        )
        .await?;
        create_index(
            manager,
            "idx_webhook_events_received_at",
            WebhookEvents::Table,
            &[WebhookEvents::ReceivedAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookEvents::Table.into_iden(),
            MeetingReminders::Table.into_iden(),
            Meetings::Table.into_iden(),
            Leads::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

async fn create_index<T, C>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: &[C],
) -> Result<(), DbErr>
where
    T: IntoIden + Copy + 'static,
    C: IntoIden + Copy + 'static,
{
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(*column);
    }
    manager.create_index(index.to_owned()).await
}

#[derive(DeriveIden, Clone, Copy)]
enum Leads {
    Table,
    Id,
    Email,
    Name,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Meetings {
    Table,
    Id,
    LeadId,
    CalendlyEventId,
    CalendlyInviteeId,
    MeetingName,
    StartTime,
    EndTime,
    Status,
    InviteeEmail,
    InviteeName,
    InviteeTimezone,
    CancelReason,
    CanceledBy,
    CancelerType,
    CanceledAt,
    RescheduledFromInviteeId,
    RescheduledToInviteeId,
    NoShow,
    NoShowChangedAt,
    LastEventAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum MeetingReminders {
    Table,
    Id,
    MeetingId,
    ReminderType,
    ScheduledTime,
    Sent,
    State,
    ClaimedBy,
    ClaimExpiresAt,
    SentAt,
    Attempts,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WebhookEvents {
    Table,
    Id,
    TrackingId,
    EventType,
    DedupeKey,
    Source,
    PayloadUri,
    RawBody,
    EventProto,
    ReceivedAt,
    ProcessedAt,
    Outcome,
    Error,
    Attempts,
}

//! Every setting the code reads is documented: each name that the adapter's, the meeting
//! service's and the `calendly` command's settings ask their lookup for is a row of a table in
//! `docs/configuration.md`. The names come from the code itself, by recording what it asks for,
//! so a new variable cannot slip in undocumented.

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::BTreeSet};

    use crate::binaries::workspace_root;

    /// The names `read` asks its lookup for. The lookup answers `given` (production with its
    /// required secrets, so that every later setting is read too) and nothing else.
    fn names_read(
        given: &[(&str, &str)],
        read: impl Fn(&dyn Fn(&str) -> Option<String>),
    ) -> BTreeSet<String> {
        let seen = RefCell::new(BTreeSet::new());
        let lookup = |name: &str| {
            seen.borrow_mut().insert(name.to_owned());
            given
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        read(&lookup);
        seen.into_inner()
    }

    /// Every name in backticks in the first cell of a table row of the page (a row may name two,
    /// `` `A` / `B` ``).
    fn documented(page: &str) -> BTreeSet<String> {
        let text = std::fs::read_to_string(workspace_root().join(page)).expect("the page is readable");
        text.lines()
            .filter_map(|line| line.strip_prefix("| "))
            .filter_map(|rest| rest.split(" | ").next())
            .flat_map(|cell| {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_setting_the_code_reads_is_in_the_configuration_page() {
        let production = [
            ("APP_ENV", "production"),
            ("CALENDLY_WEBHOOK_SECRET", "documented-settings-key"),
            ("INTERNAL_API_TOKEN", "documented-settings-token"),
            ("CALENDLY_API_TOKEN", "documented-settings-api-token"),
        ];
        let mut read = BTreeSet::new();
        for given in [&production[..], &[]] {
            read.extend(names_read(given, |lookup| {
                adapter::Config::from_lookup(lookup).expect("adapter settings");
            }));
            read.extend(names_read(given, |lookup| {
                meeting_service::Config::from_lookup(lookup).expect("meeting service settings");
            }));
        }
        read.extend(names_read(&production, |lookup| {
            calendly_cli::settings::Settings::from_lookup(lookup, true).expect("CLI settings");
        }));
        let documented = documented("docs/configuration.md");
        let missing: Vec<_> = read.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "read by the code but not in docs/configuration.md: {missing:?}"
        );
        assert!(read.len() > 20, "the recording saw the settings: {read:?}");
    }
}

//! Verification of `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.
//!
//! The MAC covers the ASCII timestamp, one `.`, then the raw body exactly as received, keyed
//! with the signing-key string's bytes. Parsing is tolerant in the ways `signing-vectors.json`
//! documents (spaces, order, several `v1`, unknown schemes ignored) and strict about the rest:
//! exactly one numeric `t`, and `v1` values that are 64 hex digits. Pure: the clock is an input.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Calendly's own samples reject deliveries older than three minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 180;

const MAC_LEN: usize = 32;

/// Why a delivery's signature was not accepted. Each maps to its own HTTP error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the Calendly-Webhook-Signature header is missing")]
    MissingHeader,
    #[error("the Calendly-Webhook-Signature header must carry exactly one numeric t")]
    MalformedHeader,
    #[error("the Calendly-Webhook-Signature header carries no v1 signature of 64 hex digits")]
    MalformedSignature,
    /// Correctly formed, but signed too long ago (or too far ahead). `age_secs` is negative for
    /// a timestamp in the future. Whether the MAC itself matched is reported so that genuine but
    /// late deliveries (for example Calendly retries that keep their first `t`) can be told apart.
    #[error(
        "the signature timestamp is {} s {}, outside the {tolerance_secs} s tolerance",
        age_secs.unsigned_abs(),
        if *age_secs >= 0 { "old" } else { "in the future" }
    )]
    TimestampOutOfTolerance {
        age_secs: i64,
        tolerance_secs: u64,
        signature_matches: bool,
    },
    #[error("no configured signing key produces the given signature")]
    SignatureMismatch,
}

/// The configured signing keys (several during a rotation). `Debug` never shows them.
#[derive(Clone, Default)]
pub struct SigningKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys([redacted; {}])", self.0.len())
    }
}

impl SigningKeys {
    /// Keys separated by commas, as in `CALENDLY_WEBHOOK_SECRET=new,old`. Blank entries are
    /// dropped; each key is used as-is (never base64- or hex-decoded), as Calendly does.
    pub fn from_comma_separated(value: &str) -> Self {
        Self(
            value
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(|key| key.as_bytes().to_vec())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A parsed header: the timestamp and every well-formed `v1` value, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub signatures: Vec<[u8; MAC_LEN]>,
}

impl SignatureHeader {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let mut timestamp = None;
        let mut timestamps_seen = 0;
        let mut signatures = Vec::new();
        for element in value.split(',') {
            let Some((scheme, value)) = element.trim().split_once('=') else {
                continue;
            };
            match scheme.trim() {
                "t" => {
                    timestamps_seen += 1;
                    timestamp = parse_unix_seconds(value.trim());
                }
                "v1" => {
                    if let Some(mac) = decode_mac(value.trim()) {
                        signatures.push(mac);
                    }
                }
                _ => {}
            }
        }
        let timestamp = match (timestamps_seen, timestamp) {
            (1, Some(timestamp)) => timestamp,
            _ => return Err(Error::MalformedHeader),
        };
        if signatures.is_empty() {
            return Err(Error::MalformedSignature);
        }
        Ok(Self {
            timestamp,
            signatures,
        })
    }
}

fn parse_unix_seconds(value: &str) -> Option<i64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn decode_mac(value: &str) -> Option<[u8; MAC_LEN]> {
    if value.len() != MAC_LEN * 2 {
        return None;
    }
    let mut mac = [0u8; MAC_LEN];
    hex::decode_to_slice(value, &mut mac).ok()?;
    Some(mac)
}

/// The MAC Calendly would send for `body` signed at `timestamp` with `key`.
pub fn compute_mac(key: &[u8], timestamp: i64, body: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// A complete header value for `body`, as Calendly would send it. Used by tests and tools.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(compute_mac(key, timestamp, body))
    )
}

/// Accepts the delivery when any `v1` in `header` matches any key, and its timestamp lies within
/// `tolerance_secs` of `now_unix` in either direction (the edge is inclusive).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    keys: &SigningKeys,
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<(), Error> {
    let header = header.ok_or(Error::MissingHeader)?;
    if header.trim().is_empty() {
        return Err(Error::MalformedHeader);
    }
    let parsed = SignatureHeader::parse(header)?;
    let signature_matches = keys.0.iter().any(|key| {
        let expected = compute_mac(key, parsed.timestamp, body);
        // Check every candidate without an early exit, so timing says nothing about which matched.
        parsed
            .signatures
            .iter()
            .fold(subtle::Choice::from(0), |found, given| {
                found | given.ct_eq(&expected)
            })
            .into()
    });
    let age_secs = now_unix.saturating_sub(parsed.timestamp);
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(Error::TimestampOutOfTolerance {
            age_secs,
            tolerance_secs,
            signature_matches,
        });
    }
    if signature_matches {
        Ok(())
    } else {
        Err(Error::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const VECTORS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/calendly");

    fn vector_body(vector: &Value) -> Vec<u8> {
        let body = &vector["body"];
        if let Some(inline) = body["inline_utf8"].as_str() {
            return inline.as_bytes().to_vec();
        }
        let file = body["file"].as_str().expect("vector body names a file");
        let mut bytes = std::fs::read(format!("{VECTORS_DIR}/{file}")).expect("fixture readable");
        if let Some(mutation) = body.get("mutation") {
            let offset = mutation["offset"].as_u64().expect("offset") as usize;
            let to = mutation["to"].as_str().expect("to").as_bytes()[0];
            bytes[offset] = to;
        }
        bytes
    }

    #[test]
    fn every_published_signing_vector_gets_its_verdict() {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(format!("{VECTORS_DIR}/signing-vectors.json")).expect("vectors readable"),
        )
        .expect("vectors are JSON");
        let vectors = doc["vectors"].as_array().expect("vectors array");
        assert_eq!(vectors.len(), 40, "the vector file holds 40 cases");
        for vector in vectors {
            let id = vector["id"].as_str().expect("id");
            let keys = vector["verifier_keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|key| key.as_str().expect("key string"))
                .collect::<Vec<_>>()
                .join(",");
            let keys = SigningKeys::from_comma_separated(&keys);
            let header = vector["header"].as_str();
            let now = vector["now"].as_i64().expect("now");
            let tolerance = vector["tolerance_seconds"].as_u64().expect("tolerance");
            let verdict = verify(header, &vector_body(vector), &keys, now, tolerance);
            match vector["expect"].as_str().expect("expect") {
                "accept" => assert_eq!(verdict, Ok(()), "{id} should be accepted"),
                "reject" => {
                    let reason = match verdict {
                        Ok(()) => panic!("{id} should be rejected"),
                        Err(Error::MissingHeader) => "missing_header",
                        Err(Error::MalformedHeader) => "malformed_header",
                        Err(Error::MalformedSignature) => "malformed_signature",
                        Err(Error::TimestampOutOfTolerance { .. }) => "timestamp_out_of_tolerance",
                        Err(Error::SignatureMismatch) => "signature_mismatch",
                    };
                    assert_eq!(
                        Some(reason),
                        vector["reason"].as_str(),
                        "{id} rejected for the documented reason"
                    );
                }
                other => panic!("{id}: unknown expectation {other}"),
            }
        }
    }

    #[test]
    fn a_stale_but_genuine_signature_is_told_apart_from_a_forgery() {
        let keys = SigningKeys::from_comma_separated("k");
        let header = sign(b"k", 1_000, b"{}");
        let genuine = verify(Some(&header), b"{}", &keys, 1_000 + 600, 180);
        assert_eq!(
            genuine,
            Err(Error::TimestampOutOfTolerance {
                age_secs: 600,
                tolerance_secs: 180,
                signature_matches: true
            })
        );
        let forged = verify(Some(&header), b"{\"x\":1}", &keys, 1_000 + 600, 180);
        assert!(matches!(
            forged,
            Err(Error::TimestampOutOfTolerance {
                signature_matches: false,
                ..
            })
        ));
    }

    #[test]
    fn any_of_several_rotation_keys_is_accepted() {
        let keys = SigningKeys::from_comma_separated(" new-key , old-key ,");
        assert_eq!(keys.len(), 2);
        for key in ["new-key", "old-key"] {
            let header = sign(key.as_bytes(), 50, b"body");
            assert_eq!(verify(Some(&header), b"body", &keys, 50, 180), Ok(()));
        }
    }

    #[test]
    fn keys_are_redacted_in_debug_output() {
        let keys = SigningKeys::from_comma_separated("super-secret");
        assert!(!format!("{keys:?}").contains("super-secret"));
    }

    /// What `verify` must answer for a header that was not made with the key: never `Ok`.
    /// The checks follow the documented order (docs/http-api.md): blank or malformed header, malformed signature,
    /// timestamp out of tolerance, then a signature no key produces.
    fn expected_verdict(header: &str, now: i64, tolerance: u64) -> Result<(), Error> {
        if header.trim().is_empty() {
            return Err(Error::MalformedHeader);
        }
        let parsed = SignatureHeader::parse(header)?;
        let age_secs = now.saturating_sub(parsed.timestamp);
        if age_secs.unsigned_abs() > tolerance {
            return Err(Error::TimestampOutOfTolerance {
                age_secs,
                tolerance_secs: tolerance,
                signature_matches: false,
            });
        }
        Err(Error::SignatureMismatch)
    }

    #[test]
    fn the_header_oracle_agrees_with_hand_written_cases() {
        // The property tests lean on `expected_verdict`; these pin it to the documented codes.
        let mac = "ab".repeat(32);
        for (header, expected) in [
            ("", Error::MalformedHeader),
            ("   ", Error::MalformedHeader),
            ("garbage", Error::MalformedHeader),
            ("t=1,t=2", Error::MalformedHeader),
            ("t=x", Error::MalformedHeader),
            ("t=0", Error::MalformedSignature),
            ("t=0,v1=abc", Error::MalformedSignature),
            (&format!("t=0,v1={mac}") as &str, Error::SignatureMismatch),
        ] {
            assert_eq!(
                expected_verdict(header, 0, 180),
                Err(expected.clone()),
                "{header:?}"
            );
            let keys = SigningKeys::from_comma_separated("k");
            assert_eq!(
                verify(Some(header), b"{}", &keys, 0, 180),
                Err(expected),
                "{header:?}"
            );
        }
        assert!(matches!(
            expected_verdict(&format!("t=500,v1={mac}"), 0, 180),
            Err(Error::TimestampOutOfTolerance {
                age_secs: -500,
                signature_matches: false,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn a_signature_over_any_body_verifies(body in proptest::collection::vec(any::<u8>(), 0..2048), t in 0i64..4_000_000_000) {
            let keys = SigningKeys::from_comma_separated("prop-key");
            let header = sign(b"prop-key", t, &body);
            prop_assert_eq!(verify(Some(&header), &body, &keys, t, 180), Ok(()));
        }

        #[test]
        fn any_flipped_body_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..512), index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let keys = SigningKeys::from_comma_separated("prop-key");
            let header = sign(b"prop-key", 77, &body);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= flip;
            prop_assert_eq!(verify(Some(&header), &tampered, &keys, 77, 180), Err(Error::SignatureMismatch));
        }

        #[test]
        fn a_signature_verifies_exactly_when_its_timestamp_is_within_tolerance(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            t in 0i64..4_000_000_000,
            skew in -400i64..=400,
        ) {
            let keys = SigningKeys::from_comma_separated("prop-key");
            let header = sign(b"prop-key", t, &body);
            let verdict = verify(Some(&header), &body, &keys, t + skew, 180);
            if skew.unsigned_abs() <= 180 {
                prop_assert_eq!(verdict, Ok(()));
            } else {
                prop_assert_eq!(verdict, Err(Error::TimestampOutOfTolerance {
                    age_secs: skew,
                    tolerance_secs: 180,
                    signature_matches: true,
                }));
            }
        }

        #[test]
        fn a_header_of_random_junk_never_verifies_and_gets_its_parse_verdict(header in ".{0,200}") {
            let keys = SigningKeys::from_comma_separated("k");
            let verdict = verify(Some(&header), b"{}", &keys, 0, 180);
            prop_assert_eq!(verdict, expected_verdict(&header, 0, 180), "{:?}", header);
        }

        #[test]
        fn a_header_like_string_gets_the_verdict_its_elements_call_for(parts in proptest::collection::vec("(t|v1|v0|x)?=?[0-9a-fA-F ]{0,70}", 0..6)) {
            let header = parts.join(",");
            let keys = SigningKeys::from_comma_separated("k");
            let verdict = verify(Some(&header), b"{}", &keys, 0, 180);
            prop_assert_eq!(verdict, expected_verdict(&header, 0, 180), "{:?}", header);
        }
    }
}

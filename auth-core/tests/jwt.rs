//! Project Wycheproof's JSON Web Signature vectors (Google, Apache-2.0;
//! `tests/vectors/wycheproof/`, copied unchanged) against
//! `auth_core::token::jwt::verify_jws` and `PublicKey::from_jwk`.
//!
//! * A group whose key we accept (ES256 on P-256, EdDSA on Ed25519, RS256
//!   of 2048 bits or more, for signing): every case must give its expected
//!   result (`valid` verifies, `invalid` is refused, `acceptable` either).
//! * A group whose key we refuse (another algorithm: HS256, RS384, PS256,
//!   ES512..., or a key for encryption): `from_jwk` must refuse the key, so
//!   nothing it signed verifies. Each case signed with an algorithm we do
//!   not accept (or whose header does not parse) must moreover be refused
//!   by `verify_jws` with the closest keys we do accept: the same RSA or
//!   P-256 key declared for RS256 / ES256, or, for key types we have no
//!   counterpart of (oct, P-521), every key of the file we accept. (A case
//!   in one of our algorithms under a refused key, say RS256 by a key for
//!   encryption, would rightly verify under that key re-declared for
//!   signing; the refusal of the key is its refusal.)
#![cfg(feature = "jwt")]
#![allow(clippy::print_stdout)]

use auth_core::token::jwt::{Algorithm, PublicKey, verify_jws};
use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{Value, json};

const VECTORS: &str = include_str!("vectors/wycheproof/json_web_signature_test.json");

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    ran: usize,
    as_expected: usize,
    valid_accepted: usize,
    invalid_refused: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    /// Cases whose group key `from_jwk` refused.
    key_refused: usize,
    /// Of those, the cases also refused by `verify_jws` with the closest
    /// keys we accept.
    cross_checked: usize,
    /// Valid cases by algorithm we accept, accepted.
    accepted_by_alg: [usize; 3],
}

/// The header's `alg`, if the header decodes.
fn header_alg(jws: &str) -> Option<String> {
    let header = jws.split('.').next()?;
    let header: Value =
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(header).ok()?).ok()?;
    Some(header.get("alg")?.as_str()?.to_owned())
}

/// The keys we accept closest to a refused `jwk`: the same RSA or P-256 or
/// Ed25519 key, public members only, declared for our algorithm of its
/// type; for any other key type, every key in `pool`.
fn closest_keys(jwk: &Value, pool: &[PublicKey]) -> Vec<PublicKey> {
    let same = |members: &[&str], alg: &str| {
        let mut closest = json!({ "alg": alg });
        for name in members.iter().chain(&["kid"]) {
            if let Some(value) = jwk.get(*name) {
                closest[*name] = value.clone();
            }
        }
        PublicKey::from_jwk(&closest).ok()
    };
    let closest = match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("RSA"), _) => same(&["kty", "n", "e"], "RS256"),
        (Some("EC"), Some("P-256")) => same(&["kty", "crv", "x", "y"], "ES256"),
        (Some("OKP"), Some("Ed25519")) => same(&["kty", "crv", "x"], "EdDSA"),
        _ => None,
    };
    match closest {
        Some(key) => vec![key],
        None => pool.to_vec(),
    }
}

fn group_key(group: &Value) -> &Value {
    group
        .get("public")
        .or_else(|| group.get("private"))
        .expect("every group has a key")
}

fn alg_index(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Es256 => 0,
        Algorithm::EdDsa => 1,
        Algorithm::Rs256 => 2,
    }
}

#[test]
fn wycheproof_json_web_signature() {
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(file["schema"], "json_web_signature_schema_v1.json");
    let groups = file["testGroups"].as_array().unwrap();

    // Every key of the file that we accept.
    let pool: Vec<PublicKey> = groups
        .iter()
        .filter_map(|group| PublicKey::from_jwk(group_key(group)).ok())
        .collect();
    assert!(!pool.is_empty());

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for group in groups {
        let jwk = group_key(group);
        let comment = group["comment"].as_str().unwrap_or_default();
        let key = PublicKey::from_jwk(jwk);
        let closest = if key.is_err() {
            closest_keys(jwk, &pool)
        } else {
            Vec::new()
        };
        for case in group["tests"].as_array().unwrap() {
            tally.cases += 1;
            let id = &case["tcId"];
            let expected = case["result"].as_str().unwrap();
            // A JSON serialization is not a compact one: pass its text.
            let jws = match &case["jws"] {
                Value::String(jws) => jws.clone(),
                other => other.to_string(),
            };
            tally.ran += 1;
            match &key {
                Ok(key) => {
                    let result = verify_jws(&jws, key);
                    match (expected, &result) {
                        ("valid", Ok(_)) => {
                            tally.valid_accepted += 1;
                            tally.accepted_by_alg[alg_index(key.algorithm())] += 1;
                        }
                        ("invalid", Err(_)) => tally.invalid_refused += 1,
                        ("acceptable", Ok(_)) => {
                            println!("tcId {id} ({comment}): acceptable, accepted");
                            tally.acceptable_accepted += 1;
                        }
                        ("acceptable", Err(error)) => {
                            println!("tcId {id} ({comment}): acceptable, refused ({error})");
                            tally.acceptable_refused += 1;
                        }
                        _ => {
                            failures.push(format!(
                                "tcId {id} ({comment}, {}): expected {expected}, got {result:?}",
                                case["comment"]
                            ));
                            continue;
                        }
                    }
                    tally.as_expected += 1;
                }
                Err(_) => {
                    // Refused with its key. A foreign algorithm must also
                    // be refused by the closest keys we accept.
                    tally.key_refused += 1;
                    let ours = header_alg(&jws).as_deref().and_then(Algorithm::parse);
                    if ours.is_none() {
                        let accepted: Vec<&str> = closest
                            .iter()
                            .filter(|key| verify_jws(&jws, key).is_ok())
                            .map(PublicKey::kid)
                            .collect();
                        if !accepted.is_empty() {
                            failures.push(format!(
                                "tcId {id} ({comment}): a foreign algorithm verified with {accepted:?}"
                            ));
                            continue;
                        }
                        tally.cross_checked += 1;
                    }
                    tally.as_expected += 1;
                }
            }
        }
    }

    println!(
        "wycheproof JWS: {} cases, {} ran, {} as expected ({} valid accepted, {} invalid refused, \
         {} refused with their key of an algorithm or use we do not accept ({} of them also by \
         the closest keys we accept), {} acceptable accepted, {} acceptable refused; valid \
         accepted by algorithm: ES256 {}, EdDSA {}, RS256 {})",
        tally.cases,
        tally.ran,
        tally.as_expected,
        tally.valid_accepted,
        tally.invalid_refused,
        tally.key_refused,
        tally.cross_checked,
        tally.acceptable_accepted,
        tally.acceptable_refused,
        tally.accepted_by_alg[0],
        tally.accepted_by_alg[1],
        tally.accepted_by_alg[2],
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(file["numberOfTests"], 401);
    assert_eq!(tally.cases, 401);
    assert_eq!(tally.ran, 401);
    assert_eq!(tally.as_expected, 401);
    // The file's valid ES256 and RS256 signatures do verify (it has no
    // EdDSA vectors).
    assert!(tally.accepted_by_alg[0] > 0 && tally.accepted_by_alg[2] > 0);
}

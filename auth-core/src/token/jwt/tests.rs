//! The verification rules, one test each (each fails if its rule breaks),
//! and the keys' round trips.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

/// A 2048-bit RSA key (PKCS#8, base64), made for these tests by `openssl genpkey`.
const RSA_2048_PKCS8: &[&str] = &[
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCj7IPlcu44xU1ucYgjmkMFdZoJECSr",
    "F4UZyVO/0OFrsiw6uRTmicG0mXQ18YAsyis5Irz+XY26LMPth0lfDFxcEMhVpCoQW6amFmgnLayYIylP",
    "1aIUpgwx1jCSQ0930MmYRS5yu0ZCxFmfRrW17BDSFqYjEffPOXCsCHXpy0bea8VLkRqpX0wWcF2MYq46",
    "2Hm7jaUAw+QEMgXwWu3wB3+NYMHKudoHPIev15Td97i168iV+llf4TW0ihfjRz5Y9BUtNMZQXmcbG6r7",
    "4fGeDrWGxdqetEzyfIfaq+G+AR033kw1P1B1J5Onfldww5Zkb5ANMYKybHLx4Y4Fv6glLnalAgMBAAEC",
    "ggEAJhAJslIFCa6ao63+CBJORKrBeSBD+2xLLikm5q/IX/rvtTT7qupKzbYiG1J3yi6paatsyf2MJrI1",
    "Tmau/UCAA6qr8eLcF49Ie2FRjuNWo77qXUzERVonE71h6txxS+dxoAdUWTSuBFvWWZsQH21wnG/A5PzL",
    "l1UFmhSe2IooawWpF5EfqCjR/VtLd8zuaU+qdzfPU/cIOOc0QlF8CpRTyBo6+80gXpH4dCGj59qKxRYv",
    "PqrFo3lIo3Wszpkk4rTF5ekrP3taGBW99poYEBRPC8PN2KTL6yN5SviHsQZCX5j2DydX0VAdCMPtnpxa",
    "hupdD4zG+Q9KVquFvvQiQxB7EQKBgQDOpjE9th55/tj7FqgXZhtqWS5wSj1aNPitrzW4My3LVRB5iOPe",
    "BewhPt4CpAp/SMpqV9TiLOZRPfNi0rZrAsYI/wEVLmYEI1UwVcplMAUWwY+6DX85vhrKO7EO9FBEfaQH",
    "1WbPPf67wR6QuONKHWZshBkuYht1rfz7traloOFAXQKBgQDLEj9iDiuDHWYY0RYgZRWvn28NWgC6JGyK",
    "wYYi7+0rlBb/19nM33grMJ4wgMsWwsi5OySpUX9v2AvDiTxtFy85Me1R2sZWccSlBPzy8/2j6rhiQKHm",
    "dzQaDfIOVuSt3ZMwfxQqxOrhHuyks7itl61le2u+mBg0tIgmGMz7kNBK6QKBgFx3dv8jF74E7/hiafKW",
    "aNwMbcAnKA7ONxwYk1QJ6oraVFXdkADP65nwtIy/9EaCPriY9pQB/UkLDHYCzUdS5WQvHr/olBNz7/GB",
    "4d+nPg+xqutYkL44t2oYjaCgZ65N/fDXZ3qCRhKjVlbxtBp8z1DtRws/MQRWRyYm2tGADGqtAoGAWjY/",
    "BhZ5agPTaU7pX3bIjX5sXSgQjqDDv1h9eGPRnrxpAzsmvIbB4Z31iGKO1guuE+ucO8PCszLs9u6uc2AL",
    "UINHhEeGOLzNuOlgXaXalckeJDfGNJXcBX8QeyJK8JowWyj5Eo7sMRoF0p0se6GYHC8aDE+Q4UkZ+qKl",
    "3VPV1JECgYEAnshGGL6NB1MW7CT0+BtDRkHdT3uVPk3Vrc/+ODIUmfYB/GytREoEBeNYw3OtSWUelWrX",
    "XdUqEhPVl+5PcKD4d31mlmBziclXgaRnB/nK7ZvnQS53hbrdW0lX68BGSyyBI8YO+cdPhOv8V/UTRH8u",
    "aHZjnDeMQV6WspfkGup3o/4=",
];

/// A 1024-bit RSA key (too weak), made the same way.
const RSA_1024_PKCS8: &[&str] = &[
    "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBALxdE5Vm6OZaPk0PH1yIcNCjlF6ODJVT",
    "ZHqQlx0veqzf7hUZzaqaoydSUwfbUSMB+337UH/lPrvdQkTaV3SkyxVvQ9yNUGYNT90KMSaplJl6MIUJ",
    "hkZjolxhUT1ilHLLdUlEDKrZ/zW4LptOV7a+5XaeCzPVaiEdKdvhMG87jRBnAgMBAAECgYAkigWngKwD",
    "K1RUjG9v+sOvpVu9r95/BQtDv1KhBbnNWS8NBtFfm9m0YgLbTk8B9Ht9p8eo16aAuN4HDzfR17nRG+BB",
    "ovfvxgu3r8I1S0T+87jrVuM0m/huCP2Wn9W2eOrFyiCX1njg/yi8KtXXoIDiOxPijHazV3S32nqxufrx",
    "eQJBAPY5MukN1l/MZJ05URLM9GN17WyZPbPTT+Ibga0Q4z69qkX5sXruwUkNqMHw2YjQN0l9dZtT/nVT",
    "GX09iW8dgz0CQQDD178QD645zBbfgjvlEPBJGAGERHVNLXhxM8SAFYGuzdaDB7fiiyjRw7UJ+aHmtpwF",
    "ZLEHvUFSJ8ODnPMI+UxzAkBXmEO/W3fffuRwdpqcGKP82lBL6TxlRBDQPL7mZfKiOHFiEZGNTXEf3ych",
    "T+Dj5kc08tgrGTeWX6jawFCrYhF1AkBPXmBQYgp54fxjGKStcO/wr4nt0NC5NnRZbGF2h0DHVyRYdghQ",
    "B5XDbU0xfbnfhqI0jVoxiMGwSe0yqajVOjOBAkEAxsB4AfKKXbQt7zaEBRwnnwUTTcGHa2TUrK/bKvew",
    "l24qmRAuCBw72/HZcJT8t+KL3+UvI3Tw0PsqYJf9FVABmA==",
];

/// A P-256 key made by OpenSSL (PKCS#8), for interoperability.
const P256_PKCS8_OPENSSL: &[&str] = &[
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNNNLuHIzMt7mWtL3PLrOx5m5ehfk/+dm",
    "rCFphoSPrjWhRANCAATFM6Kv/00ORQDcJ1xGPv/Hbh/adcEtsuaVTLYcwnFYCv6X1FNdhIvGVCRkYsWa",
    "xRU95Os5sGpJoc2ITKqLsDon",
];

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "api.example";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn fixture(parts: &[&str]) -> Vec<u8> {
    Base64::decode_vec(&parts.concat()).unwrap()
}

fn rsa_key() -> SigningKey {
    SigningKey::from_pkcs8_der(Algorithm::Rs256, &fixture(RSA_2048_PKCS8)).unwrap()
}

/// One key of each algorithm (RSA imported: it is not generated).
fn keys() -> Vec<SigningKey> {
    vec![
        SigningKey::generate(Algorithm::Es256).unwrap(),
        SigningKey::generate(Algorithm::EdDsa).unwrap(),
        rsa_key(),
    ]
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "user-1".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 300,
        jti: AccessClaims::new_jti().unwrap(),
        sid: "family-1".into(),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: NOW - 10,
    }
}

fn claims_json() -> Value {
    serde_json::to_value(claims()).unwrap()
}

fn expect() -> Expect {
    Expect {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::ZERO,
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn unb64(part: &str) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(part).unwrap()
}

/// The header `sign` writes, for tokens made by hand.
fn header_of(key: &SigningKey) -> Value {
    json!({ "alg": key.algorithm().as_str(), "kid": key.kid(), "typ": "at+jwt" })
}

/// A token with any header and payload, correctly signed by `key`: only
/// what the test changed can make it fail.
fn sign_raw(key: &SigningKey, header: &Value, payload: &[u8]) -> String {
    provider::ensure_installed();
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        key.encoding_key(),
        key.algorithm().to_jwt(),
    )
    .unwrap();
    format!("{input}.{signature}")
}

fn sign_claims(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, header, claims.to_string().as_bytes())
}

fn split(token: &str) -> (String, String, String) {
    let mut parts = token.split('.').map(str::to_owned);
    let parts = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert_eq!(token.split('.').count(), 3);
    parts
}

fn verify(keys: &KeySet, token: &str) -> Result<AccessClaims, TokenError> {
    keys.verify(token, &expect(), at(NOW))
}

#[test]
fn sign_and_verify_round_trip_for_every_algorithm() {
    for key in keys() {
        let alg = key.algorithm();
        let public = key.public_key();
        let set = KeySet::new(key);
        let claims = claims();
        let token = set.sign(&claims).unwrap();
        assert_eq!(verify(&set, &token).unwrap(), claims, "{alg}");

        let (header, payload, _) = split(&token);
        let header: Value = serde_json::from_slice(&unb64(&header)).unwrap();
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["kid"], set.current().kid());
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(verify_jws(&token, &public).unwrap(), unb64(&payload));
    }
}

#[test]
fn a_tampered_payload_is_refused() {
    for key in keys() {
        let set = KeySet::new(key);
        let token = set.sign(&claims()).unwrap();
        let (header, _, signature) = split(&token);
        let mut forged = claims_json();
        forged["sub"] = json!("admin");
        let forged = format!(
            "{header}.{}.{signature}",
            b64(forged.to_string().as_bytes())
        );
        assert!(matches!(verify(&set, &forged), Err(TokenError::Signature)));
    }
}

#[test]
fn a_tampered_signature_is_refused() {
    for key in keys() {
        let set = KeySet::new(key);
        let token = set.sign(&claims()).unwrap();
        let (header, payload, signature) = split(&token);
        let mut bytes = unb64(&signature);
        for index in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x01;
            let forged = format!("{header}.{payload}.{}", b64(&flipped));
            assert!(matches!(verify(&set, &forged), Err(TokenError::Signature)));
        }
        // One byte short, one byte long.
        bytes.pop();
        let short = format!("{header}.{payload}.{}", b64(&bytes));
        assert!(matches!(verify(&set, &short), Err(TokenError::Signature)));
        bytes.extend([0, 0]);
        let long = format!("{header}.{payload}.{}", b64(&bytes));
        assert!(matches!(verify(&set, &long), Err(TokenError::Signature)));
    }
}

#[test]
fn a_der_ecdsa_signature_is_refused() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key);
    let token = set.sign(&claims()).unwrap();
    let (header, payload, signature) = split(&token);
    let fixed = p256::ecdsa::Signature::from_slice(&unb64(&signature)).unwrap();
    let der = fixed.to_der();
    let token = format!("{header}.{payload}.{}", b64(der.as_bytes()));
    assert!(matches!(verify(&set, &token), Err(TokenError::Signature)));
}

#[test]
fn alg_none_is_refused() {
    for key in keys() {
        let set = KeySet::new(key.clone());
        for none in ["none", "None", "NONE"] {
            let mut header = header_of(&key);
            header["alg"] = json!(none);
            let unsigned = format!(
                "{}.{}.",
                b64(header.to_string().as_bytes()),
                b64(claims_json().to_string().as_bytes())
            );
            assert!(verify(&set, &unsigned).is_err());
            // With something where the signature goes, it is the algorithm
            // that refuses it.
            let with_signature = format!("{unsigned}AAAA");
            assert!(matches!(
                verify(&set, &with_signature),
                Err(TokenError::Algorithm)
            ));
        }
    }
}

/// The public key's bytes as an attacker would feed them to HMAC.
fn public_secrets(key: &PublicKey) -> Vec<Vec<u8>> {
    let jwk = key.to_jwk();
    let mut secrets = vec![jwk.to_string().into_bytes()];
    match key.algorithm() {
        Algorithm::Es256 => {
            let mut point = vec![4];
            point.extend(unb64(jwk["x"].as_str().unwrap()));
            point.extend(unb64(jwk["y"].as_str().unwrap()));
            secrets.push(point);
        }
        Algorithm::EdDsa => secrets.push(unb64(jwk["x"].as_str().unwrap())),
        Algorithm::Rs256 => secrets.push(unb64(jwk["n"].as_str().unwrap())),
    }
    secrets
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    for key in keys() {
        let set = KeySet::new(key.clone());
        let mut header = header_of(&key);
        header["alg"] = json!("HS256");
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims_json().to_string().as_bytes())
        );
        for secret in public_secrets(&key.public_key()) {
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
            mac.update(input.as_bytes());
            let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
            assert!(matches!(verify(&set, &token), Err(TokenError::Algorithm)));
            assert!(matches!(
                verify_jws(&token, &key.public_key()),
                Err(TokenError::Algorithm)
            ));
        }
    }
}

#[test]
fn the_algorithm_comes_from_the_key_not_the_header() {
    let [es256, eddsa, rs256]: [SigningKey; 3] = keys().try_into().unwrap();
    for (victim, attacker) in [
        (&eddsa, &es256),
        (&es256, &eddsa),
        (&rs256, &es256),
        (&es256, &rs256),
        (&rs256, &eddsa),
    ] {
        let set = KeySet::new(victim.clone());
        // A valid signature by the attacker's key, naming the victim's key.
        let mut header = header_of(attacker);
        header["kid"] = json!(victim.kid());
        let token = sign_claims(attacker, &header, &claims_json());
        assert!(matches!(verify(&set, &token), Err(TokenError::Algorithm)));

        // The victim's own token with the header's alg changed.
        let token = set.sign(&claims()).unwrap();
        let (_, payload, signature) = split(&token);
        let mut header = header_of(victim);
        header["alg"] = json!(attacker.algorithm().as_str());
        let token = format!(
            "{}.{payload}.{signature}",
            b64(header.to_string().as_bytes())
        );
        assert!(matches!(verify(&set, &token), Err(TokenError::Algorithm)));
    }
}

#[test]
fn an_unknown_or_missing_kid_is_refused() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let other = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());

    let token = KeySet::new(other.clone()).sign(&claims()).unwrap();
    assert!(matches!(verify(&set, &token), Err(TokenError::UnknownKey)));

    let mut header = header_of(&key);
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_claims(&key, &header, &claims_json());
    assert!(matches!(verify(&set, &token), Err(TokenError::UnknownKey)));

    header["kid"] = json!(7);
    let token = sign_claims(&key, &header, &claims_json());
    assert!(matches!(verify(&set, &token), Err(TokenError::Header)));

    // verify_jws: a kid, if present, must be the key's.
    let mut header = header_of(&key);
    header["kid"] = json!(other.kid());
    let token = sign_claims(&key, &header, &claims_json());
    assert!(matches!(
        verify_jws(&token, &key.public_key()),
        Err(TokenError::UnknownKey)
    ));
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_claims(&key, &header, &claims_json());
    assert!(verify_jws(&token, &key.public_key()).is_ok());
}

#[test]
fn key_bearing_and_critical_headers_are_refused() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    let values = [
        ("jwk", key.public_key().to_jwk()),
        ("jku", json!("https://auth.example/jwks.json")),
        ("x5u", json!("https://auth.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
        ("b64", json!(false)),
        ("enc", json!("A256GCM")),
        ("zip", json!("DEF")),
    ];
    for (name, value) in values {
        let mut header = header_of(&key);
        header[name] = value;
        let token = sign_claims(&key, &header, &claims_json());
        assert!(
            matches!(verify(&set, &token), Err(TokenError::Header)),
            "{name}"
        );
        assert!(
            matches!(
                verify_jws(&token, &key.public_key()),
                Err(TokenError::Header)
            ),
            "{name}"
        );
    }
}

#[test]
fn typ_must_be_at_jwt_in_verify_only() {
    let key = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let set = KeySet::new(key.clone());
    for (typ, accepted) in [
        (None, false),
        (Some(json!("JWT")), false),
        (Some(json!("jwt")), false),
        (Some(json!(1)), false),
        (Some(json!("at+jwt")), true),
        (Some(json!("AT+JWT")), true),
        (Some(json!("application/at+jwt")), true),
    ] {
        let mut header = header_of(&key);
        match &typ {
            None => {
                header.as_object_mut().unwrap().remove("typ");
            }
            Some(typ) => header["typ"] = typ.clone(),
        }
        let token = sign_claims(&key, &header, &claims_json());
        let result = verify(&set, &token);
        if accepted {
            assert!(result.is_ok(), "{typ:?}");
        } else {
            assert!(matches!(result, Err(TokenError::Header)), "{typ:?}");
        }
        if typ.as_ref().is_none_or(Value::is_string) {
            assert!(verify_jws(&token, &key.public_key()).is_ok(), "{typ:?}");
        }
    }
}

#[test]
fn the_compact_form_is_strict() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    let token = set.sign(&claims()).unwrap();
    let (header, payload, signature) = split(&token);
    let malformed = [
        String::new(),
        ".".into(),
        "..".into(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}."),
        format!("{header}.{payload}.{signature}.{signature}"),
        format!(".{payload}.{signature}"),
        format!("{header}.{payload}."),
        format!("{header}=.{payload}.{signature}"),
        format!("{header}.{payload}=.{signature}"),
        format!("{header}.{payload}.{signature}="),
        format!("{header} .{payload}.{signature}"),
        format!("{header}.{payload}.{signature}\n"),
        // Standard base64's alphabet.
        format!("{header}.+{}.{signature}", &payload[1..]),
        format!("{header}.{payload}./{}", &signature[1..]),
        // Non-zero unused bits ("AB" is not the canonical encoding of 0x00).
        format!("{header}.AB.{signature}"),
        // Headers that are not one JSON object.
        format!("{}.{payload}.{signature}", b64(b"not json")),
        format!("{}.{payload}.{signature}", b64(b"[1,2]")),
        format!("{}.{payload}.{signature}", b64(b"\"at+jwt\"")),
        format!("{}.{payload}.{signature}", b64(&[0xff, 0xfe])),
    ];
    for token in &malformed {
        assert!(
            matches!(verify(&set, token), Err(TokenError::Malformed)),
            "{token:?}"
        );
        assert!(matches!(
            verify_jws(token, &key.public_key()),
            Err(TokenError::Malformed)
        ));
    }

    // A repeated header member (here a second alg) is refused.
    let repeated = format!(
        r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt","alg":"none"}}"#,
        key.kid()
    );
    let token = sign_raw(&key, &json!(null), claims_json().to_string().as_bytes());
    let (_, payload, _) = split(&token);
    let input = format!("{}.{payload}", b64(repeated.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        key.encoding_key(),
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    let token = format!("{input}.{signature}");
    assert!(matches!(verify(&set, &token), Err(TokenError::Malformed)));
    // The same header once: accepted.
    let single = format!(r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt"}}"#, key.kid());
    let input = format!("{}.{payload}", b64(single.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        key.encoding_key(),
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    assert!(verify(&set, &format!("{input}.{signature}")).is_ok());
}

#[test]
fn tokens_over_8_kib_are_refused_before_parsing() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    // Correctly signed, but too long.
    let mut claims = claims_json();
    claims["pad"] = json!("x".repeat(MAX_TOKEN_LEN));
    let token = sign_claims(&key, &header_of(&key), &claims);
    assert!(token.len() > MAX_TOKEN_LEN);
    assert!(matches!(verify(&set, &token), Err(TokenError::Malformed)));
    assert!(matches!(
        verify_jws(&token, &key.public_key()),
        Err(TokenError::Malformed)
    ));
    // Just under the limit is fine.
    let mut claims = claims_json();
    claims["pad"] = json!("");
    let base = sign_claims(&key, &header_of(&key), &claims).len();
    let room = (MAX_TOKEN_LEN - base) * 3 / 4 - 3;
    claims["pad"] = json!("x".repeat(room));
    let token = sign_claims(&key, &header_of(&key), &claims);
    assert!(token.len() <= MAX_TOKEN_LEN && token.len() > MAX_TOKEN_LEN - 8);
    assert!(verify(&set, &token).is_ok());

    // And sign refuses to make one.
    let mut big = self::claims();
    big.amr = vec!["x".repeat(MAX_TOKEN_LEN)];
    assert!(matches!(set.sign(&big), Err(TokenError::TooLarge)));
}

#[test]
fn the_issuer_must_match() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    for iss in [
        json!("https://evil.example"),
        json!(""),
        json!(ISSUER.to_uppercase()),
    ] {
        let mut claims = claims_json();
        claims["iss"] = iss;
        let token = sign_claims(&key, &header_of(&key), &claims);
        assert!(matches!(verify(&set, &token), Err(TokenError::Claims)));
    }
}

#[test]
fn the_audience_must_match_as_a_string_or_in_an_array() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    for (aud, accepted) in [
        (json!(AUDIENCE), true),
        (json!([AUDIENCE]), true),
        (json!(["other", AUDIENCE]), true),
        (json!("other"), false),
        (json!(["other"]), false),
        (json!([]), false),
        (json!(null), false),
        (json!([1]), false),
        (json!({ "aud": AUDIENCE }), false),
    ] {
        let mut claims = claims_json();
        claims["aud"] = aud.clone();
        let token = sign_claims(&key, &header_of(&key), &claims);
        match verify(&set, &token) {
            Ok(claims) if accepted => assert_eq!(claims.aud, AUDIENCE),
            Err(TokenError::Claims) if !accepted => {}
            other => panic!("{aud}: {other:?}"),
        }
    }
}

#[test]
fn claims_must_be_present_with_their_json_types() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    let mut cases = vec![
        ("exp", Some(json!((NOW + 300).to_string()))),
        ("nbf", Some(json!(NOW.to_string()))),
        ("iat", Some(json!(NOW.to_string()))),
        ("auth_time", Some(json!(NOW.to_string()))),
        ("exp", Some(json!((NOW + 300) as f64 + 0.5))),
        ("exp", Some(json!(-1))),
        ("exp", Some(json!(null))),
        ("sub", Some(json!(1))),
        ("amr", Some(json!("pwd"))),
        ("amr", Some(json!([1]))),
        ("jti", Some(json!(null))),
    ];
    for name in [
        "iss",
        "aud",
        "sub",
        "iat",
        "nbf",
        "exp",
        "jti",
        "sid",
        "amr",
        "auth_time",
    ] {
        cases.push((name, None));
    }
    for (name, value) in cases {
        let mut claims = claims_json();
        match &value {
            Some(value) => claims[name] = value.clone(),
            None => {
                claims.as_object_mut().unwrap().remove(name);
            }
        }
        let token = sign_claims(&key, &header_of(&key), &claims);
        assert!(
            matches!(verify(&set, &token), Err(TokenError::Claims)),
            "{name}: {value:?}"
        );
    }
    // A repeated claim is refused too.
    let mut text = claims_json().to_string();
    text.pop();
    text.push_str(&format!(r#","exp":{}}}"#, NOW + 999_999));
    let token = sign_raw(&key, &header_of(&key), text.as_bytes());
    assert!(matches!(verify(&set, &token), Err(TokenError::Claims)));
    // The claims must be JSON.
    let token = sign_raw(&key, &header_of(&key), b"foo");
    assert!(matches!(verify(&set, &token), Err(TokenError::Claims)));
}

fn token_with_times(key: &SigningKey, iat: u64, nbf: u64, exp: u64) -> String {
    let mut claims = claims_json();
    claims["iat"] = json!(iat);
    claims["nbf"] = json!(nbf);
    claims["exp"] = json!(exp);
    sign_claims(key, &header_of(key), &claims)
}

fn verify_with_leeway(set: &KeySet, token: &str, leeway: u64) -> Result<AccessClaims, TokenError> {
    let expect = Expect {
        leeway: Duration::from_secs(leeway),
        ..expect()
    };
    set.verify(token, &expect, at(NOW))
}

#[test]
fn an_expired_token_is_refused() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    let token = token_with_times(&key, NOW - 300, NOW - 300, NOW);
    assert!(matches!(verify(&set, &token), Err(TokenError::Expired)));
    let token = token_with_times(&key, NOW - 300, NOW - 300, NOW - 1);
    assert!(matches!(verify(&set, &token), Err(TokenError::Expired)));
    let token = token_with_times(&key, NOW - 300, NOW - 300, NOW + 1);
    assert!(verify(&set, &token).is_ok());
    // The clock is the caller's: the same token, a second later.
    assert!(matches!(
        set.verify(&token, &expect(), at(NOW + 1)),
        Err(TokenError::Expired)
    ));
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    let token = token_with_times(&key, NOW, NOW + 1, NOW + 300);
    assert!(matches!(verify(&set, &token), Err(TokenError::NotYetValid)));
    let token = token_with_times(&key, NOW + 1, NOW, NOW + 300);
    assert!(matches!(verify(&set, &token), Err(TokenError::NotYetValid)));
    let token = token_with_times(&key, NOW, NOW, NOW + 300);
    assert!(verify(&set, &token).is_ok());
    assert!(matches!(
        set.verify(&token, &expect(), at(NOW - 1)),
        Err(TokenError::NotYetValid)
    ));
}

#[test]
fn the_leeway_applies_and_is_capped_at_60_seconds() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key.clone());
    // Expired 30 s ago: accepted with 31 s of leeway, not with 30.
    let token = token_with_times(&key, NOW - 330, NOW - 330, NOW - 30);
    assert!(verify_with_leeway(&set, &token, 31).is_ok());
    assert!(matches!(
        verify_with_leeway(&set, &token, 30),
        Err(TokenError::Expired)
    ));
    // Starts in 30 s: accepted with 30 s of leeway, not with 29.
    let token = token_with_times(&key, NOW + 30, NOW + 30, NOW + 300);
    assert!(verify_with_leeway(&set, &token, 30).is_ok());
    assert!(matches!(
        verify_with_leeway(&set, &token, 29),
        Err(TokenError::NotYetValid)
    ));
    // An hour of leeway counts as 60 s.
    let token = token_with_times(&key, NOW - 400, NOW - 400, NOW - 59);
    assert!(verify_with_leeway(&set, &token, 3600).is_ok());
    let token = token_with_times(&key, NOW - 400, NOW - 400, NOW - 60);
    assert!(matches!(
        verify_with_leeway(&set, &token, 3600),
        Err(TokenError::Expired)
    ));
    let token = token_with_times(&key, NOW + 60, NOW + 60, NOW + 300);
    assert!(verify_with_leeway(&set, &token, 3600).is_ok());
    let token = token_with_times(&key, NOW + 61, NOW + 61, NOW + 300);
    assert!(matches!(
        verify_with_leeway(&set, &token, 3600),
        Err(TokenError::NotYetValid)
    ));
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rotation_keeps_the_old_key_verifying_until_keep_passes() {
    let old = SigningKey::generate(Algorithm::Es256).unwrap();
    let new = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let (old_kid, new_kid) = (old.kid().to_owned(), new.kid().to_owned());
    let mut set = KeySet::new(old);
    let mut long = claims();
    long.exp = NOW + 3600;
    let old_token = set.sign(&long).unwrap();

    let keep = Duration::from_secs(600);
    set.rotate(new, at(NOW), keep);
    assert_eq!(set.current().kid(), new_kid);
    let new_token = set.sign(&long).unwrap();
    let (header, _, _) = split(&new_token);
    let header: Value = serde_json::from_slice(&unb64(&header)).unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(header["alg"], "EdDSA");

    let expect = expect();
    for now in [NOW, NOW + 599] {
        assert_eq!(set.verify(&old_token, &expect, at(now)).unwrap(), long);
        assert_eq!(set.verify(&new_token, &expect, at(now)).unwrap(), long);
        assert_eq!(kids(&set.jwks(at(now))), [new_kid.clone(), old_kid.clone()]);
    }
    assert!(matches!(
        set.verify(&old_token, &expect, at(NOW + 600)),
        Err(TokenError::UnknownKey)
    ));
    assert!(set.verify(&new_token, &expect, at(NOW + 600)).is_ok());
    assert_eq!(kids(&set.jwks(at(NOW + 600))), [new_kid.as_str()]);

    // Pruned: gone even for a caller whose clock is behind.
    set.prune(at(NOW + 600));
    assert!(matches!(
        set.verify(&old_token, &expect, at(NOW)),
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(set.retired(at(NOW)).count(), 0);

    // Rotating to the current key changes nothing.
    let current = set.current().clone();
    set.rotate(current, at(NOW), keep);
    assert_eq!(set.retired(at(NOW)).count(), 0);
    assert_eq!(set.current().kid(), new_kid);
}

#[test]
fn rotate_drops_retired_keys_past_their_time() {
    let a = SigningKey::generate(Algorithm::Es256).unwrap();
    let b = SigningKey::generate(Algorithm::Es256).unwrap();
    let c = SigningKey::generate(Algorithm::Es256).unwrap();
    let (a_kid, b_kid) = (a.kid().to_owned(), b.kid().to_owned());
    let mut set = KeySet::new(a);
    set.rotate(b, at(NOW), Duration::from_secs(60));
    set.rotate(c, at(NOW + 60), Duration::from_secs(60));
    let retired: Vec<&str> = set.retired(at(0)).map(|(key, _)| key.kid()).collect();
    assert_eq!(retired, [b_kid.as_str()]);
    assert!(!format!("{set:?}").contains(&a_kid));
}

#[test]
fn added_public_keys_verify_until_their_time() {
    let here = SigningKey::generate(Algorithm::Es256).unwrap();
    let there = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let token = KeySet::new(there.clone()).sign(&claims()).unwrap();
    let mut set = KeySet::new(here.clone());
    assert!(matches!(verify(&set, &token), Err(TokenError::UnknownKey)));

    // Through its JWK, as another instance publishes it.
    let public = PublicKey::from_jwk(&there.public_key().to_jwk()).unwrap();
    set.add_retired(public, at(NOW + 1));
    assert_eq!(verify(&set, &token).unwrap(), claims_with_jti(&token));
    assert!(matches!(
        set.verify(&token, &expect(), at(NOW + 1)),
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(kids(&set.jwks(at(NOW))), [here.kid(), there.kid()]);

    // A public key with the current key's id never replaces it.
    let mut jwk = there.public_key().to_jwk();
    jwk["kid"] = json!(here.kid());
    set.add_retired(PublicKey::from_jwk(&jwk).unwrap(), at(NOW + 3600));
    assert_eq!(set.retired(at(NOW)).count(), 1);
    let forged = sign_claims(
        &there,
        &json!({ "alg": "EdDSA", "kid": here.kid(), "typ": "at+jwt" }),
        &claims_json(),
    );
    assert!(matches!(verify(&set, &forged), Err(TokenError::Algorithm)));
}

/// The claims a token carries (for comparing with a fresh `jti`).
fn claims_with_jti(token: &str) -> AccessClaims {
    let (_, payload, _) = split(token);
    serde_json::from_slice(&unb64(&payload)).unwrap()
}

#[test]
fn the_jwks_has_public_members_only() {
    let mut keys = keys().into_iter();
    let mut set = KeySet::new(keys.next().unwrap());
    for next in keys {
        set.rotate(next, at(NOW), Duration::from_secs(600));
    }
    let jwks = set.jwks(at(NOW));
    let listed = jwks["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for jwk in listed {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(jwk.get(private).is_none(), "{private} in {jwk}");
        }
        assert_eq!(jwk["use"], "sig");
        assert!(Algorithm::parse(jwk["alg"].as_str().unwrap()).is_some());
        let public = PublicKey::from_jwk(jwk).unwrap();
        assert_eq!(public.kid(), jwk["kid"].as_str().unwrap());
        assert_eq!(public.kid(), public.thumbprint());
        assert_eq!(public.to_jwk(), *jwk);
    }
}

#[test]
fn debug_shows_no_key_material() {
    for key in keys() {
        let der = key.to_pkcs8_der();
        let der = der.expose_secret();
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!(
                "SigningKey {{ kid: {:?}, alg: {:?}, .. }}",
                key.kid(),
                key.algorithm()
            )
        );
        let set = KeySet::new(key.clone());
        assert_eq!(
            format!("{set:?}"),
            format!("KeySet {{ current: {:?}, retired: [] }}", key.kid())
        );
        let public = format!("{:?}", key.public_key());
        for text in [&debug, &public, &format!("{set:?}")] {
            assert!(!text.contains(&Base64::encode_string(der)));
            assert!(!text.contains(&b64(&der[der.len() - 32..])));
            assert!(!text.contains(&format!("{:?}", &der[der.len() - 8..])));
        }
    }
}

#[test]
fn pkcs8_round_trips() {
    for key in keys() {
        let der = key.to_pkcs8_der();
        let back = SigningKey::from_pkcs8_der(key.algorithm(), der.expose_secret()).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(back.to_pkcs8_der().expose_secret(), der.expose_secret());
        // What the restored key signs, the original's set verifies.
        let token = KeySet::new(back).sign(&claims()).unwrap();
        assert!(verify(&KeySet::new(key.clone()), &token).is_ok());
        // The DER of one algorithm is not a key of another.
        for other in Algorithm::ALL {
            if other != key.algorithm() {
                assert!(matches!(
                    SigningKey::from_pkcs8_der(other, der.expose_secret()),
                    Err(KeyError::Invalid)
                ));
            }
        }
    }
    // OpenSSL's P-256 PKCS#8 imports.
    let openssl =
        SigningKey::from_pkcs8_der(Algorithm::Es256, &fixture(P256_PKCS8_OPENSSL)).unwrap();
    assert_eq!(openssl.kid(), openssl.public_key().thumbprint());
    for garbage in [&b""[..], b"\x30\x00", &[0u8; 64]] {
        for alg in Algorithm::ALL {
            assert!(matches!(
                SigningKey::from_pkcs8_der(alg, garbage),
                Err(KeyError::Invalid)
            ));
        }
    }
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::Rs256, &fixture(RSA_1024_PKCS8)),
        Err(KeyError::Weak)
    ));
    assert!(matches!(
        SigningKey::generate(Algorithm::Rs256),
        Err(KeyError::Unsupported)
    ));
    let a = SigningKey::generate(Algorithm::Es256).unwrap();
    let b = SigningKey::generate(Algorithm::Es256).unwrap();
    assert_ne!(a.kid(), b.kid());
}

#[test]
fn kids_are_rfc_7638_thumbprints() {
    // RFC 7638 section 3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
    });
    let key = PublicKey::from_jwk(&jwk).unwrap();
    assert_eq!(key.kid(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    for key in keys() {
        assert_eq!(key.kid(), key.public_key().thumbprint());
        assert_eq!(key.kid().len(), 43);
    }
}

#[test]
fn from_jwk_refuses_what_it_must() {
    let es = SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .public_key()
        .to_jwk();
    let ed = SigningKey::generate(Algorithm::EdDsa)
        .unwrap()
        .public_key()
        .to_jwk();
    let rs = rsa_key().public_key().to_jwk();
    let with = |base: &Value, name: &str, value: Value| {
        let mut jwk = base.clone();
        jwk[name] = value;
        jwk
    };
    let without = |base: &Value, name: &str| {
        let mut jwk = base.clone();
        jwk.as_object_mut().unwrap().remove(name);
        jwk
    };
    let weak_n = {
        // The modulus of the 1024-bit fixture.
        use rsa::pkcs8::DecodePrivateKey as _;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&fixture(RSA_1024_PKCS8)).unwrap();
        b64(&rsa::traits::PublicKeyParts::n_bytes(&key))
    };
    let off_curve = {
        let mut y = unb64(es["y"].as_str().unwrap());
        y[31] ^= 1;
        b64(&y)
    };
    type Check = fn(&KeyError) -> bool;
    let cases: Vec<(Value, Check)> = vec![
        (json!("not an object"), |e| matches!(e, KeyError::Invalid)),
        (with(&es, "d", json!("AAAA")), |e| {
            matches!(e, KeyError::PrivateMaterial)
        }),
        (with(&rs, "p", json!("AAAA")), |e| {
            matches!(e, KeyError::PrivateMaterial)
        }),
        (with(&rs, "qi", json!("AAAA")), |e| {
            matches!(e, KeyError::PrivateMaterial)
        }),
        (with(&ed, "d", json!("AAAA")), |e| {
            matches!(e, KeyError::PrivateMaterial)
        }),
        (json!({ "kty": "oct", "k": "AAAA", "alg": "HS256" }), |e| {
            matches!(e, KeyError::PrivateMaterial)
        }),
        (without(&es, "alg"), |e| {
            matches!(e, KeyError::MissingAlgorithm)
        }),
        (with(&es, "alg", json!("HS256")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&es, "alg", json!("ES384")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&rs, "alg", json!("PS256")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&rs, "alg", json!("rs256")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&rs, "alg", json!("ES256")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&es, "alg", json!("EdDSA")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&es, "crv", json!("P-384")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&ed, "crv", json!("Ed448")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
        (with(&es, "use", json!("enc")), |e| {
            matches!(e, KeyError::Usage)
        }),
        (with(&rs, "key_ops", json!(["encrypt"])), |e| {
            matches!(e, KeyError::Usage)
        }),
        (with(&rs, "key_ops", json!(["sign"])), |e| {
            matches!(e, KeyError::Usage)
        }),
        (with(&rs, "key_ops", json!("verify")), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&es, "x", json!("AAAA")), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&es, "y", json!(off_curve)), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (without(&es, "y"), |e| matches!(e, KeyError::Invalid)),
        (with(&ed, "x", json!(b64(&[0; 32]))), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&rs, "n", json!(weak_n)), |e| {
            matches!(e, KeyError::Weak)
        }),
        (with(&rs, "e", json!("AAE")), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&rs, "n", json!("not base64!")), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&es, "kid", json!("")), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&es, "kid", json!(1)), |e| {
            matches!(e, KeyError::Invalid)
        }),
        (with(&es, "kty", json!("RSA")), |e| {
            matches!(e, KeyError::Unsupported)
        }),
    ];
    for (jwk, expected) in cases {
        match PublicKey::from_jwk(&jwk) {
            Err(error) if expected(&error) => {}
            other => panic!("{jwk}: {other:?}"),
        }
    }
    // Accepted: no `use`, `key_ops` with verify, a kid of its own.
    let mut accepted = without(&rs, "use");
    accepted["key_ops"] = json!(["sign", "verify"]);
    accepted["kid"] = json!("rsa-1");
    let key = PublicKey::from_jwk(&accepted).unwrap();
    assert_eq!(key.kid(), "rsa-1");
    assert_eq!(key.algorithm(), Algorithm::Rs256);
    // Without a kid, the thumbprint.
    let key = PublicKey::from_jwk(&without(&ed, "kid")).unwrap();
    assert_eq!(key.kid(), ed["kid"].as_str().unwrap());
}

#[test]
fn the_provider_refuses_instead_of_panicking() {
    provider::ensure_installed();
    assert!(jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some());
    let ours = provider::provider();
    let utils = &ours.key_utils;
    for garbage in [&b""[..], b"\x30", &[0u8; 40]] {
        assert!((utils.rsa_pub_components_from_private_key)(garbage).is_err());
        assert!((utils.rsa_pub_components_from_public_key)(garbage).is_err());
        for alg in [
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::ES384,
        ] {
            assert!((utils.ec_pub_components_from_private_key)(garbage, alg).is_err());
        }
        for curve in [
            jsonwebtoken::jwk::EllipticCurve::Ed25519,
            jsonwebtoken::jwk::EllipticCurve::P256,
        ] {
            assert!((utils.ed_pub_components_from_private_key)(garbage, &curve).is_err());
        }
    }
    assert_eq!(
        (utils.compute_digest)(b"", jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap()
            .len(),
        32
    );
    // The key utilities on real keys.
    let es = SigningKey::generate(Algorithm::Es256).unwrap();
    let (_, x, _) = (utils.ec_pub_components_from_private_key)(
        es.encoding_key().as_bytes(),
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    assert_eq!(b64(&x), es.public_key().to_jwk()["x"]);
    assert!(
        (utils.ec_pub_components_from_private_key)(
            es.encoding_key().as_bytes(),
            jsonwebtoken::Algorithm::ES384,
        )
        .is_err()
    );
    let rs = rsa_key();
    let (n, _) = (utils.rsa_pub_components_from_private_key)(rs.encoding_key().as_bytes()).unwrap();
    assert_eq!(b64(&n), rs.public_key().to_jwk()["n"]);

    // Other algorithms, and keys of the wrong family, are errors.
    let secret = jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap();
    for alg in [
        jsonwebtoken::Algorithm::HS256,
        jsonwebtoken::Algorithm::HS512,
        jsonwebtoken::Algorithm::ES384,
        jsonwebtoken::Algorithm::PS256,
        jsonwebtoken::Algorithm::RS384,
        jsonwebtoken::Algorithm::RS512,
    ] {
        assert!((ours.signer_factory)(&alg, es.encoding_key()).is_err());
        assert!((ours.signer_factory)(&alg, &secret).is_err());
        assert!((ours.verifier_factory)(&alg, es.public_key().decoding_key()).is_err());
    }
    for alg in [
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::EdDSA,
        jsonwebtoken::Algorithm::RS256,
    ] {
        assert!((ours.signer_factory)(&alg, &secret).is_err());
        let hmac = jsonwebtoken::DecodingKey::from_secret(b"secret").unwrap();
        assert!((ours.verifier_factory)(&alg, &hmac).is_err());
    }
    // Short or long raw keys (jsonwebtoken's own EdDSA verifier slices).
    for len in [0, 31, 33] {
        let key = jsonwebtoken::DecodingKey::from_ed_der(&vec![9; len]);
        assert!((ours.verifier_factory)(&jsonwebtoken::Algorithm::EdDSA, &key).is_err());
        let key = jsonwebtoken::DecodingKey::from_ec_der(&vec![4; len]);
        assert!((ours.verifier_factory)(&jsonwebtoken::Algorithm::ES256, &key).is_err());
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(&[], &[1, 0, 1]);
    assert!((ours.verifier_factory)(&jsonwebtoken::Algorithm::RS256, &key).is_err());
}

#[test]
fn keys_and_sets_are_shared_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<KeySet>();
    send_sync::<SigningKey>();
    send_sync::<PublicKey>();
    send_sync::<TokenError>();
    send_sync::<KeyError>();
}

#[test]
fn token_ids_are_128_random_bits() {
    let a = AccessClaims::new_jti().unwrap();
    let b = AccessClaims::new_jti().unwrap();
    assert_eq!(a.len(), 22);
    assert_eq!(unb64(&a).len(), 16);
    assert_ne!(a, b);
}

#[test]
fn errors_never_carry_the_token() {
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let set = KeySet::new(key);
    let token = set.sign(&claims()).unwrap();
    let (header, payload, signature) = split(&token);
    let bad = format!("{header}.{payload}.{}", &signature[..signature.len() - 4]);
    let error = verify(&set, &bad).unwrap_err();
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(&payload) && !text.contains(&signature[..10]));
    }
    // Every refusal of a malformed token, whatever part is broken, names
    // the rule only: none of its text (the variants carry no data).
    for broken in [
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}.extra"),
        format!("{header}x.{payload}.{signature}"),
        format!("{header}.{payload}x.{signature}"),
        format!("{header}.{payload}.{signature}x"),
        "not a token".to_owned(),
    ] {
        let error = verify(&set, &broken).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains(&payload[..10]) && !text.contains(&header[..10]),
            "{text}"
        );
        assert!(text.len() < 200, "{text}");
    }
}

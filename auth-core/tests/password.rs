//! Password hashing: official vectors, hashes from other implementations,
//! upgrade detection, legacy formats, pepper rotation and policy.

use auth_core::password::{
    Argon2Params, HashedPassword, Password, PasswordError, PasswordHasher, PasswordPolicy,
    PolicyContext, PolicyViolation, UpgradeReason, Verification,
};

const OK: Verification = Verification::Match { upgrade: None };

fn verify(hasher: &PasswordHasher, password: &str, hash: &str) -> Verification {
    hasher
        .verify(&Password::from(password), &HashedPassword::new(hash))
        .unwrap()
}

/// Cheap parameters for tests that make many hashes.
fn fast_hasher() -> PasswordHasher {
    PasswordHasher::builder()
        .params(Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .insecure_allow_weak_params()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Reference PHC strings and hashes made by other implementations
// ---------------------------------------------------------------------------

/// The Argon2id v1.3 vectors of the reference implementation's `test.c`
/// (phc-winner-argon2): password, salt "somesalt" unless stated, PHC string.
const REFERENCE_ARGON2ID: &[(&str, &str)] = &[
    (
        "password",
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
    ),
    (
        "password",
        "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
    ),
    (
        "password",
        "$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
    ),
    (
        "password",
        "$argon2id$v=19$m=65536,t=1,p=1$c29tZXNhbHQ$9qWtwbpyPd3vm1rB1GThgPzZ3/ydHL92zKL+15XZypg",
    ),
    (
        "password",
        "$argon2id$v=19$m=65536,t=4,p=1$c29tZXNhbHQ$kCXUjmjvc5XMqQedpMTsOv+zyJEf5PhtGiUghW9jFyw",
    ),
    (
        "differentpassword",
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$C4TWUs9rDEvq7w3+J4umqA32aWKB1+DSiRuBfYxFj94",
    ),
    (
        "password",
        "$argon2id$v=19$m=65536,t=2,p=1$ZGlmZnNhbHQ$vfMrBczELrFdWP0ZsfhWsRPaHppYdP3MVEMIVlqoFBw",
    ),
];

#[test]
fn reference_phc_strings_verify() {
    let hasher = PasswordHasher::default();
    for (password, phc) in REFERENCE_ARGON2ID {
        assert!(verify(&hasher, password, phc).is_match(), "{phc}");
    }
}

#[test]
fn reference_phc_strings_refuse_wrong_passwords() {
    let hasher = PasswordHasher::default();
    for (password, phc) in REFERENCE_ARGON2ID {
        for wrong in ["", "Password", "password ", "passwor", "differentpassword2"] {
            if wrong != *password {
                assert_eq!(
                    verify(&hasher, wrong, phc),
                    Verification::Mismatch,
                    "{wrong} {phc}"
                );
            }
        }
    }
}

#[test]
fn tampered_reference_strings_do_not_verify() {
    let hasher = PasswordHasher::default();
    let (password, phc) = REFERENCE_ARGON2ID[1];
    // Another salt, another cost, a flipped output character: each must
    // change the result, so the stored parameters are really used.
    let tampered = [
        phc.replace("c29tZXNhbHQ", "ZGlmZnNhbHQ"),
        phc.replace("t=2", "t=3"),
        phc.replace("p=1", "p=2"),
        phc.replace("nf65EOg", "nf65EOh"),
        phc.replace("$argon2id$", "$argon2i$"),
        phc.replace("$v=19$", "$v=16$"),
    ];
    for hash in tampered {
        assert_eq!(
            verify(&hasher, password, &hash),
            Verification::Mismatch,
            "{hash}"
        );
    }
}

/// Made by argon2-cffi 25.1 (the reference C code) for these passwords.
#[test]
fn hashes_from_argon2_cffi_verify() {
    let hasher = PasswordHasher::default();
    assert_eq!(
        verify(
            &hasher,
            "correct horse battery staple",
            "$argon2id$v=19$m=19456,t=2,p=1$gknnaFvzZ9rvowpSWTzfkA$xdZNnD5hhifnnYuKwcfnNncSDLIHu1ygaERL8ZqrI5U"
        ),
        OK
    );
    // Stronger than the defaults (m=65536, t=3, p=4): matches, not flagged.
    assert_eq!(
        verify(
            &hasher,
            "correct horse battery staple",
            "$argon2id$v=19$m=65536,t=3,p=4$LYMgxGzGQaNRNQOFd0/MEQ$jcubUrd+Oq0PBxHGytL5YF3gazgJf8uwXGq5INndp8E"
        ),
        OK
    );
    // m=12288, t=3, p=2 with a non-ASCII password: matches; the memory cost
    // is below the configured 19456, so it is flagged.
    assert_eq!(
        verify(
            &hasher,
            "pässwörd ünïcödé",
            "$argon2id$v=19$m=12288,t=3,p=2$Unmcv7ABJ5ewZfhpAblMsg$xvU1Sj64PknTh/ug7YxDntLfUIA94/QRUkFnM3+6ePw"
        ),
        Verification::Match {
            upgrade: Some(UpgradeReason::Params)
        }
    );
}

#[test]
fn malformed_hashes_are_errors_not_panics() {
    let hasher = PasswordHasher::default();
    let cases = [
        "",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
        "$argon2id$v=19$m=abc,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=0,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=19456,t=4294967295,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        // Costs far above the configuration: refused, never run (a planted
        // hash must not hold every hashing slot or exhaust memory).
        "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=19456,t=100,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=42$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2x$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=19456,t=2,p=1,zz=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=19456,t=2,p=1$!!!$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "plaintext",
        "\u{0}\u{1}",
    ];
    let before = hasher.kdf_invocations();
    for case in cases {
        let result = hasher.verify(&Password::from("password"), &HashedPassword::new(case));
        assert!(
            matches!(
                result,
                Err(PasswordError::MalformedHash | PasswordError::UnsupportedAlgorithm)
            ),
            "{case:?} gave {result:?}"
        );
        // The error names no hash content.
        if let Err(error) = result {
            assert!(!error.to_string().contains("c29tZXNhbHQ"));
        }
    }
    // None of them was run (each is refused while parsed); each cost the
    // one dummy derivation at the current parameters that any failed
    // verification costs, so such an account is not told apart by timing.
    assert_eq!(
        hasher.kdf_invocations() - before,
        cases.len() as u64,
        "one dummy derivation each, no malformed hash run"
    );
}

#[test]
fn unsupported_schemes_are_reported() {
    let hasher = PasswordHasher::default();
    for hash in [
        "$1$saltsalt$hash",
        "$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA",
        "$5$rounds=5000$x$y",
    ] {
        assert!(matches!(
            hasher.verify(&Password::from("x"), &HashedPassword::new(hash)),
            Err(PasswordError::UnsupportedAlgorithm)
        ));
    }
}

// ---------------------------------------------------------------------------
// Our own hashes
// ---------------------------------------------------------------------------

#[test]
fn new_hashes_use_the_owasp_defaults() {
    let hasher = PasswordHasher::default();
    let hash = hasher
        .hash(&Password::from("correct horse battery staple"))
        .unwrap();
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash:?}"
    );
    assert_eq!(
        verify(&hasher, "correct horse battery staple", hash.as_str()),
        OK
    );
    assert_eq!(
        verify(&hasher, "correct horse battery stapl", hash.as_str()),
        Verification::Mismatch
    );
    // A fresh salt every time.
    let again = hasher
        .hash(&Password::from("correct horse battery staple"))
        .unwrap();
    assert_ne!(hash, again);
}

#[test]
fn verification_is_exact_no_case_folding_or_truncation() {
    let hasher = PasswordHasher::default();
    let long = "Tr0ub4dor&3-".repeat(30); // 360 bytes
    let hash = hasher.hash(&Password::from(long.as_str())).unwrap();
    assert!(verify(&hasher, &long, hash.as_str()).is_match());
    assert!(!verify(&hasher, &long.to_lowercase(), hash.as_str()).is_match());
    assert!(!verify(&hasher, &long[..long.len() - 1], hash.as_str()).is_match());
    assert!(!verify(&hasher, &long[..72], hash.as_str()).is_match());
}

#[test]
fn nfkc_precomposed_and_decomposed_forms_verify_the_same() {
    let hasher = PasswordHasher::default();
    let precomposed = "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e \u{212b}";
    let decomposed = "Cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e A\u{30a}";
    let hash = hasher.hash(&Password::from(precomposed)).unwrap();
    assert_eq!(verify(&hasher, decomposed, hash.as_str()), OK);
    let hash = hasher.hash(&Password::from(decomposed)).unwrap();
    assert_eq!(verify(&hasher, precomposed, hash.as_str()), OK);
    // Compatibility forms too: a full-width "Ａ" is "A".
    let hash = hasher.hash(&Password::from("\u{ff21}bcdefgh1")).unwrap();
    assert_eq!(verify(&hasher, "Abcdefgh1", hash.as_str()), OK);
}

#[test]
fn oversized_input_is_refused_without_hashing() {
    let hasher = PasswordHasher::default();
    let huge = Password::from("x".repeat(4097));
    let before = hasher.kdf_invocations();
    assert!(matches!(hasher.hash(&huge), Err(PasswordError::TooLong)));
    let stored = HashedPassword::new(REFERENCE_ARGON2ID[0].1);
    assert!(matches!(
        hasher.verify(&huge, &stored),
        Err(PasswordError::TooLong)
    ));
    assert!(matches!(
        hasher.verify_dummy(&huge),
        Err(PasswordError::TooLong)
    ));
    assert_eq!(hasher.kdf_invocations(), before, "no key derivation ran");
    // 4096 bytes exactly is accepted.
    assert!(hasher.hash(&Password::from("x".repeat(4096))).is_ok());
}

// ---------------------------------------------------------------------------
// Upgrade detection
// ---------------------------------------------------------------------------

fn upgrade(hasher: &PasswordHasher, password: &str, hash: &str) -> Option<UpgradeReason> {
    match verify(hasher, password, hash) {
        Verification::Match { upgrade } => {
            assert_eq!(
                hasher.upgrade_reason(&HashedPassword::new(hash)).unwrap(),
                upgrade,
                "upgrade_reason agrees with verify"
            );
            upgrade
        }
        Verification::Mismatch => panic!("{hash} should verify"),
    }
}

#[test]
fn current_hashes_are_not_flagged() {
    let hasher = PasswordHasher::default();
    let hash = hasher.hash(&Password::from("a fine passphrase")).unwrap();
    assert_eq!(upgrade(&hasher, "a fine passphrase", hash.as_str()), None);
    // Stronger than current (more memory, more passes) is not weaker.
    assert_eq!(
        upgrade(
            &hasher,
            "correct horse battery staple",
            "$argon2id$v=19$m=65536,t=3,p=4$LYMgxGzGQaNRNQOFd0/MEQ$jcubUrd+Oq0PBxHGytL5YF3gazgJf8uwXGq5INndp8E"
        ),
        None
    );
    // The reference vectors use the 8-byte salt "somesalt": below the 16
    // bytes we use, so flagged even at m=65536.
    assert_eq!(
        upgrade(
            &hasher,
            "password",
            "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
        ),
        Some(UpgradeReason::Params)
    );
}

#[test]
fn weaker_parameters_are_flagged() {
    let hasher = PasswordHasher::default();
    // m below 19456
    assert_eq!(
        upgrade(
            &hasher,
            "password",
            "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"
        ),
        Some(UpgradeReason::Params)
    );
    // t below 2 (even with more memory)
    assert_eq!(
        upgrade(
            &hasher,
            "password",
            "$argon2id$v=19$m=65536,t=1,p=1$c29tZXNhbHQ$9qWtwbpyPd3vm1rB1GThgPzZ3/ydHL92zKL+15XZypg"
        ),
        Some(UpgradeReason::Params)
    );
    // 16-byte output (argon2-cffi, hash_len=16)
    assert_eq!(
        upgrade(
            &hasher,
            "correct horse battery staple",
            "$argon2id$v=19$m=19456,t=2,p=1$bgeRMKc1+jp42V9NEZZpGg$GaChR0Xz4uexjcGNBsd8eQ"
        ),
        Some(UpgradeReason::Params)
    );
    // 8-byte salt (argon2-cffi, salt_len=8)
    assert_eq!(
        upgrade(
            &hasher,
            "correct horse battery staple",
            "$argon2id$v=19$m=19456,t=2,p=1$hjZV5JrER3s$aiTPAN4Cm9v5S3RQvOQkfDQ7a8Y4OCFX+dFyomFqzgs"
        ),
        Some(UpgradeReason::Params)
    );
    // Our own weak hasher's output, checked by a default one.
    let weak = fast_hasher()
        .hash(&Password::from("fast and weak"))
        .unwrap();
    assert_eq!(
        upgrade(&hasher, "fast and weak", weak.as_str()),
        Some(UpgradeReason::Params)
    );
}

#[test]
fn other_variants_and_versions_are_flagged() {
    let hasher = PasswordHasher::default();
    let password = "correct horse battery staple";
    // argon2-cffi: Argon2i, Argon2d, Argon2id version 0x10.
    assert_eq!(
        upgrade(
            &hasher,
            password,
            "$argon2i$v=19$m=19456,t=2,p=1$6oefvKMV2HaIsquhZ1LqwA$m+TY0W947hgPewyApFhSFXzzFtngqKxXPBtiKBnRYGw"
        ),
        Some(UpgradeReason::Algorithm)
    );
    assert_eq!(
        upgrade(
            &hasher,
            password,
            "$argon2d$v=19$m=19456,t=2,p=1$owjPoyqeQz8ehg05r0aEMQ$6qeUV8oEb2hq2gIB6ZPAJlw567v4q9CQUirD2BM96NA"
        ),
        Some(UpgradeReason::Algorithm)
    );
    assert_eq!(
        upgrade(
            &hasher,
            password,
            "$argon2id$v=16$m=19456,t=2,p=1$WRMksbI0WjxaluX9jBpBjA$h7KyIrsn6vno58Yy6Bfhp3ov3RK22i4FN5vE3znFARM"
        ),
        Some(UpgradeReason::Version)
    );
}

#[test]
fn a_wrong_password_never_reports_an_upgrade() {
    let hasher = PasswordHasher::default();
    let weak =
        "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
    let result = verify(&hasher, "not the password", weak);
    assert_eq!(result, Verification::Mismatch);
    assert!(!result.needs_rehash());
}

#[test]
fn weak_parameters_are_refused_unless_explicitly_insecure() {
    for params in [
        Argon2Params {
            m_cost: 4096,
            t_cost: 10,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 19456,
            t_cost: 1,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        // Between OWASP's pairs: m x t looks large enough, m does not.
        Argon2Params {
            m_cost: 17920,
            t_cost: 2,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 35840,
            t_cost: 1,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 9216,
            t_cost: 3,
            p_cost: 1,
        },
    ] {
        assert!(matches!(
            PasswordHasher::builder().params(params).build(),
            Err(PasswordError::Config(_))
        ));
    }
    for params in [
        Argon2Params {
            m_cost: 47104,
            t_cost: 1,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 12288,
            t_cost: 3,
            p_cost: 1,
        },
        Argon2Params {
            m_cost: 7168,
            t_cost: 5,
            p_cost: 1,
        },
    ] {
        assert!(PasswordHasher::builder().params(params).build().is_ok());
    }
    // Invalid for Argon2 itself, even when insecure is allowed.
    assert!(matches!(
        PasswordHasher::builder()
            .params(Argon2Params {
                m_cost: 64,
                t_cost: 0,
                p_cost: 1
            })
            .insecure_allow_weak_params()
            .build(),
        Err(PasswordError::Config(_))
    ));
}

// ---------------------------------------------------------------------------
// Pepper
// ---------------------------------------------------------------------------

mod pepper {
    use super::*;
    use auth_core::password::Pepper;

    fn peppered(current: Option<Pepper>, previous: &[Pepper]) -> PasswordHasher {
        let mut builder = PasswordHasher::builder();
        if let Some(current) = current {
            builder = builder.pepper(current);
        }
        for p in previous {
            builder = builder.previous_pepper(p.clone());
        }
        builder.build().unwrap()
    }

    fn key(id: &str, byte: u8) -> Pepper {
        Pepper::new(id, vec![byte; 32]).unwrap()
    }

    #[test]
    fn the_key_id_is_carried_and_the_pepper_is_an_input() {
        let hasher = peppered(Some(key("k1", 1)), &[]);
        let hash = hasher.hash(&Password::from("peppered passphrase")).unwrap();
        // "k1" in unpadded base64 is "azE".
        assert!(hash.as_str().contains(",keyid=azE$"), "{hash:?}");
        assert_eq!(verify(&hasher, "peppered passphrase", hash.as_str()), OK);
        // Same key id, other secret: no match. The pepper is really mixed in.
        let impostor = peppered(Some(key("k1", 2)), &[]);
        assert_eq!(
            verify(&impostor, "peppered passphrase", hash.as_str()),
            Verification::Mismatch
        );
        // Without that key configured: a clear error, not a silent mismatch.
        assert!(matches!(
            PasswordHasher::default().verify(&Password::from("peppered passphrase"), &hash),
            Err(PasswordError::UnknownPepperKey)
        ));
    }

    #[test]
    fn rotation_keeps_old_hashes_verifying_and_flags_them() {
        let old = peppered(Some(key("k1", 1)), &[]);
        let old_hash = old.hash(&Password::from("rotate me please")).unwrap();
        let unpeppered = PasswordHasher::default()
            .hash(&Password::from("rotate me please"))
            .unwrap();

        let new = peppered(Some(key("k2", 9)), &[key("k1", 1)]);
        assert_eq!(
            upgrade(&new, "rotate me please", old_hash.as_str()),
            Some(UpgradeReason::Pepper)
        );
        assert_eq!(
            upgrade(&new, "rotate me please", unpeppered.as_str()),
            Some(UpgradeReason::Pepper)
        );
        let new_hash = new.hash(&Password::from("rotate me please")).unwrap();
        assert_eq!(upgrade(&new, "rotate me please", new_hash.as_str()), None);
    }

    #[test]
    fn pepper_configuration_is_validated_and_redacted() {
        assert!(Pepper::new("", vec![0; 32]).is_err());
        assert!(Pepper::new("123456789", vec![0; 32]).is_err());
        assert!(Pepper::new("k", vec![0; 15]).is_err());
        let pepper = Pepper::new("k", b"super-secret-pepper-bytes".to_vec()).unwrap();
        assert!(!format!("{pepper:?}").contains("super-secret"));
        let hasher = peppered(Some(pepper.clone()), &[]);
        assert!(!format!("{hasher:?}").contains("super-secret"));
        // Duplicate key ids are refused.
        assert!(
            PasswordHasher::builder()
                .pepper(pepper.clone())
                .previous_pepper(pepper)
                .build()
                .is_err()
        );
    }
}

// ---------------------------------------------------------------------------
// Legacy formats
// ---------------------------------------------------------------------------

#[cfg(feature = "bcrypt")]
mod bcrypt_legacy {
    use super::*;

    /// A wrong password against a bcrypt hash costs one derivation, like
    /// any other wrong password.
    #[test]
    fn a_wrong_password_costs_one_derivation() {
        let hasher = PasswordHasher::default();
        let before = hasher.kdf_invocations();
        assert_eq!(
            verify(&hasher, "not the password", A71),
            Verification::Mismatch
        );
        assert_eq!(hasher.kdf_invocations() - before, 1);
    }

    // Made by Python's `bcrypt` 5.0 (OpenBSD's code) at cost 4.
    const A71: &str = "$2b$04$KyC4JDIEWJxFrsaxboMTKuimQu/4ZonPTlrkoX3R8G.UiwptByocy";
    const A72: &str = "$2b$04$FsBuq2ymspr97d3frWu/6.DEpgwyWodBsvV64aOOQX0lDdV5X8vBu";
    /// "é" x 35 + "ab": 72 bytes, 37 code points.
    const MB72: &str = "$2b$04$T5Za.rsLxSBgRXai7Cl/VObCTy1cBeG7uI3uCOK.2F/zy8pDD1Ua2";
    /// "é" x 35 + "a": 71 bytes.
    const MB71: &str = "$2b$04$7sqRnBvj9d8gjbxvWzlFC.lwiU4NaXUDB6y5kE4GHyLwcI5DEM8yO";

    #[test]
    fn seventy_one_and_seventy_two_bytes_verify_and_are_flagged() {
        let hasher = PasswordHasher::default();
        let alg = Verification::Match {
            upgrade: Some(UpgradeReason::Algorithm),
        };
        assert_eq!(verify(&hasher, &"a".repeat(71), A71), alg);
        assert_eq!(verify(&hasher, &"a".repeat(72), A72), alg);
        assert_eq!(verify(&hasher, &format!("{}ab", "é".repeat(35)), MB72), alg);
        assert_eq!(verify(&hasher, &format!("{}a", "é".repeat(35)), MB71), alg);
        assert_eq!(
            verify(&hasher, &"a".repeat(70), A71),
            Verification::Mismatch
        );
    }

    #[test]
    fn seventy_three_bytes_are_refused_never_truncated() {
        let hasher = PasswordHasher::default();
        // Truncated to 72 these would match; they must not.
        assert_eq!(
            verify(&hasher, &"a".repeat(73), A72),
            Verification::Mismatch
        );
        assert_eq!(
            verify(&hasher, &"a".repeat(100), A72),
            Verification::Mismatch
        );
        // Multibyte: 72 bytes + "é" is 74 bytes.
        assert_eq!(
            verify(&hasher, &format!("{}abé", "é".repeat(35)), MB72),
            Verification::Mismatch
        );
        // 71 bytes + "é" = 73 bytes whose first 72 bytes end mid-character.
        assert_eq!(
            verify(&hasher, &format!("{}aé", "é".repeat(35)), MB71),
            Verification::Mismatch
        );
    }

    #[test]
    fn an_over_long_password_costs_one_hash_like_any_wrong_one() {
        let hasher = PasswordHasher::default();
        let before = hasher.kdf_invocations();
        assert_eq!(
            verify(&hasher, &"a".repeat(73), A72),
            Verification::Mismatch
        );
        assert_eq!(hasher.kdf_invocations() - before, 1);
    }

    #[test]
    fn absurd_costs_are_refused_without_running() {
        let hasher = PasswordHasher::default();
        let expensive = A72.replacen("$04$", "$17$", 1);
        let before = hasher.kdf_invocations();
        // Refused while parsed (cost 17 is never run); the one derivation
        // is the dummy at the current parameters that every failed
        // verification costs.
        assert!(matches!(
            hasher.verify(&Password::from("a"), &HashedPassword::new(expensive)),
            Err(PasswordError::MalformedHash)
        ));
        assert_eq!(hasher.kdf_invocations() - before, 1);
    }

    #[test]
    fn all_prefixes_are_recognised() {
        let hasher = PasswordHasher::default();
        for prefix in ["$2a$", "$2y$"] {
            let hash = A71.replacen("$2b$", prefix, 1);
            assert!(
                verify(&hasher, &"a".repeat(71), &hash).is_match(),
                "{prefix}"
            );
        }
        assert!(matches!(
            hasher.verify(&Password::from("x"), &HashedPassword::new("$2b$04$short")),
            Err(PasswordError::MalformedHash)
        ));
    }
}

#[cfg(feature = "pbkdf2")]
mod pbkdf2_legacy {
    use super::*;

    /// A wrong password against a legacy hash costs one derivation (of
    /// the legacy kind: its own cost, which only a re-hash at the next
    /// login can change), like any other wrong password.
    #[test]
    fn a_wrong_password_costs_one_derivation() {
        let hasher = PasswordHasher::default();
        let django = "pbkdf2_sha256$870000$seasalt2$nxgnNHRsZWSmi4hRSKq2MRigfaRmjDhH1NH4g2sQRbU=";
        let before = hasher.kdf_invocations();
        assert_eq!(verify(&hasher, "letmein", django), Verification::Mismatch);
        assert_eq!(hasher.kdf_invocations() - before, 1);
    }

    #[test]
    fn django_format_verifies_and_is_flagged() {
        let hasher = PasswordHasher::default();
        // Python's hashlib.pbkdf2_hmac (OpenSSL), Django's layout and
        // Django 5.1's iteration count.
        let django = "pbkdf2_sha256$870000$seasalt2$nxgnNHRsZWSmi4hRSKq2MRigfaRmjDhH1NH4g2sQRbU=";
        assert_eq!(
            verify(&hasher, "lètmein", django),
            Verification::Match {
                upgrade: Some(UpgradeReason::Algorithm)
            }
        );
        assert_eq!(verify(&hasher, "letmein", django), Verification::Mismatch);
        for broken in [
            "pbkdf2_sha256$870000$seasalt2",
            "pbkdf2_sha256$many$seasalt2$nxgnNHRsZWSmi4hRSKq2MRigfaRmjDhH1NH4g2sQRbU=",
            "pbkdf2_sha256$0$seasalt2$nxgnNHRsZWSmi4hRSKq2MRigfaRmjDhH1NH4g2sQRbU=",
            "pbkdf2_sha256$870000$seasalt2$***",
            "pbkdf2_sha256$870000$seasalt2$nxgn$extra",
            "pbkdf2_sha256$50000000$seasalt2$nxgnNHRsZWSmi4hRSKq2MRigfaRmjDhH1NH4g2sQRbU=",
        ] {
            assert!(
                matches!(
                    hasher.verify(&Password::from("lètmein"), &HashedPassword::new(broken)),
                    Err(PasswordError::MalformedHash)
                ),
                "{broken}"
            );
        }
        assert!(matches!(
            hasher.verify(
                &Password::from("x"),
                &HashedPassword::new("pbkdf2_sha1$1$a$b")
            ),
            Err(PasswordError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn phc_format_verifies_and_is_flagged() {
        let hasher = PasswordHasher::default();
        // The RustCrypto pbkdf2 crate's PHC vector (RFC 7914-style inputs).
        let phc = "$pbkdf2-sha256$i=4096,l=40\
            $c2FsdFNBTFRzYWx0U0FMVHNhbHRTQUxUc2FsdFNBTFRzYWx0\
            $NIyJ28vTKy8y2BS4EW6EzysXNH68GAAYHE4qH7jdU+HGNVGMfaxH6Q";
        assert_eq!(
            verify(&hasher, "passwordPASSWORDpassword", phc),
            Verification::Match {
                upgrade: Some(UpgradeReason::Algorithm)
            }
        );
        assert_eq!(
            verify(&hasher, "passwordPASSWORDpasswor", phc),
            Verification::Mismatch
        );
    }
}

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

fn check(policy: &PasswordPolicy, password: &str, words: &[&str]) -> Result<(), PolicyViolation> {
    let context = words.iter().fold(PolicyContext::new(), |context, word| {
        context.with_word(word)
    });
    policy.check(&Password::from(password), &context)
}

#[test]
fn policy_length_in_code_points() {
    let policy = PasswordPolicy::default();
    assert_eq!(
        check(&policy, "Zq9!xv", &[]),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // 8 code points of 2-4 bytes each pass; 7 do not.
    assert_eq!(check(&policy, "çåüßøæœ€", &[]), Ok(()));
    assert_eq!(
        check(&policy, "😀🙂🙃😉😊😇🥰", &[]),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // Decomposed input is counted composed: "e\u{301}" is one character.
    assert_eq!(
        check(&policy, "e\u{301}e\u{301}e\u{301}e\u{301}xyz", &[]),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // Nor does a compatibility expansion pad it: NFKC makes 18 characters
    // of U+FDFA, 9 of three ligatures; they are 1 and 3 keystrokes.
    let fifteen = PasswordPolicy::builder().min_length(15).build().unwrap();
    assert_eq!(
        check(&fifteen, "\u{fdfa}", &[]),
        Err(PolicyViolation::TooShort { min: 15 })
    );
    assert_eq!(
        check(&policy, "\u{fb03}\u{fb03}\u{fb03}", &[]),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // Nor text that NFKC shrinks: 4 pairs of compatibility jamo (8 code
    // points) compose to 4 syllables.
    assert_eq!(
        check(&policy, &"\u{3131}\u{314f}".repeat(4), &[]),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // The maximum counts characters as typed: 64 x U+FDFA (which NFKC
    // expands to 18 characters each) is accepted at the lowest maximum.
    let lowest = PasswordPolicy::builder().max_length(64).build().unwrap();
    assert_eq!(check(&lowest, &"\u{fdfa}".repeat(64), &[]), Ok(()));
    assert_eq!(
        check(&lowest, &"\u{fdfa}".repeat(65), &[]),
        Err(PolicyViolation::TooLong { max: 64 })
    );
    // 64 characters are always accepted, and 256 by default.
    assert_eq!(
        check(&policy, &"horse battery ".repeat(18)[..64], &[]),
        Ok(())
    );
    assert_eq!(check(&policy, &"q".repeat(256), &[]), Ok(()));
    assert_eq!(
        check(&policy, &"q".repeat(257), &[]),
        Err(PolicyViolation::TooLong { max: 256 })
    );
    // Over 4 KiB: too long, whatever the configured maximum.
    assert_eq!(
        check(&policy, &"q".repeat(5000), &[]),
        Err(PolicyViolation::TooLong { max: 256 })
    );
}

#[test]
fn policy_minimum_is_configurable_and_validated() {
    let nist_single_factor = PasswordPolicy::builder().min_length(15).build().unwrap();
    assert_eq!(
        check(&nist_single_factor, "Xk2!vq9#Lm4@", &[]),
        Err(PolicyViolation::TooShort { min: 15 })
    );
    assert_eq!(check(&nist_single_factor, "Xk2!vq9#Lm4@Rt7", &[]), Ok(()));
    assert!(PasswordPolicy::builder().min_length(6).build().is_err());
    assert!(
        PasswordPolicy::builder()
            .min_length(6)
            .insecure_allow_short_passwords()
            .build()
            .is_ok()
    );
    assert!(
        PasswordPolicy::builder()
            .min_length(0)
            .insecure_allow_short_passwords()
            .build()
            .is_err()
    );
    assert!(PasswordPolicy::builder().max_length(63).build().is_err());
    assert!(PasswordPolicy::builder().max_length(64).build().is_ok());
    assert!(
        PasswordPolicy::builder()
            .min_length(100)
            .max_length(64)
            .build()
            .is_err()
    );
}

#[test]
fn policy_blocks_common_passwords_case_insensitively() {
    let policy = PasswordPolicy::default();
    for common in [
        "password",
        "PASSWORD",
        "Password1",
        "12345678",
        "qwertyuiop",
        "iloveyou",
        "trustno1",
        "sunshine",
    ] {
        assert_eq!(
            check(&policy, common, &[]),
            Err(PolicyViolation::Common),
            "{common}"
        );
    }
    // Full-width letters normalise to the same common password.
    assert_eq!(
        check(
            &policy,
            "\u{ff50}\u{ff41}\u{ff53}\u{ff53}\u{ff57}\u{ff4f}\u{ff52}\u{ff44}",
            &[]
        ),
        Err(PolicyViolation::Common)
    );
    assert_eq!(check(&policy, "correct horse battery staple", &[]), Ok(()));
    let extra = PasswordPolicy::builder()
        .block_passwords(["ExampleCorp2026"])
        .build()
        .unwrap();
    assert_eq!(
        check(&extra, "examplecorp2026", &[]),
        Err(PolicyViolation::Common)
    );
    let off = PasswordPolicy::builder()
        .insecure_without_common_password_list()
        .build()
        .unwrap();
    assert_eq!(check(&off, "password", &[]), Ok(()));
}

#[test]
fn the_blocklist_holds_at_least_ten_thousand_entries() {
    let policy = PasswordPolicy::default();
    // Sampled from the end of the ranked list (ranks ~29,000-30,000).
    for rare in [
        "kinkysex",
        "mercede1",
        "11234567",
        "zxc123456",
        "cantstop",
        "wonderwoman",
    ] {
        assert_eq!(
            check(&policy, rare, &[]),
            Err(PolicyViolation::Common),
            "{rare}"
        );
    }
    let list = include_str!("../data/common-passwords.txt");
    assert!(list.lines().count() >= 10_000);
    let mut sorted: Vec<&str> = list.lines().collect();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        list.lines().collect::<Vec<_>>(),
        "sorted for binary search"
    );
}

#[test]
fn policy_rejects_context_words() {
    let policy = PasswordPolicy::default();
    let words = ["Alice", "Example App"];
    assert_eq!(
        check(&policy, "alice-in-wonderland", &words),
        Err(PolicyViolation::ContainsContextWord)
    );
    assert_eq!(
        check(&policy, "my ALICE password", &words),
        Err(PolicyViolation::ContainsContextWord)
    );
    assert_eq!(
        check(&policy, "exampleapp rocks!", &words),
        Err(PolicyViolation::ContainsContextWord)
    );
    assert_eq!(
        check(&policy, "an example of mine", &words),
        Err(PolicyViolation::ContainsContextWord)
    );
    assert_eq!(check(&policy, "correct horse battery", &words), Ok(()));
    // E-mail addresses: the local part and domain name count, "com" does not.
    let email = ["alice@example.com"];
    assert_eq!(
        check(&policy, "example rocks my world", &email),
        Err(PolicyViolation::ContainsContextWord)
    );
    assert_eq!(check(&policy, "become a computer wizard", &email), Ok(()));
    // Two-letter user names do not forbid everything.
    assert_eq!(check(&policy, "correct horse battery", &["or"]), Ok(()));
}

#[test]
fn no_composition_rules() {
    let policy = PasswordPolicy::default();
    for password in [
        "all lower case words",
        "ALLUPPERCASEWORDS",
        "9183746529184",
        "no digits or symbols",
    ] {
        assert_eq!(check(&policy, password, &[]), Ok(()), "{password}");
    }
}

#[test]
fn violations_have_reasons() {
    assert_eq!(PolicyViolation::TooShort { min: 8 }.code(), "too_short");
    assert_eq!(PolicyViolation::Common.code(), "common_password");
    assert_eq!(PolicyViolation::ContainsContextWord.code(), "context_word");
    assert_eq!(PolicyViolation::TooLong { max: 64 }.code(), "too_long");
    assert_eq!(
        PolicyViolation::TooShort { min: 8 }.to_string(),
        "password must be at least 8 characters long"
    );
}

// ---------------------------------------------------------------------------
// Property: hash then verify round-trips
// ---------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn hash_then_verify_round_trips(password in "\\PC{0,80}") {
            let hasher = fast_hasher();
            let hash = hasher.hash(&Password::from(password.as_str())).unwrap();
            prop_assert!(verify(&hasher, &password, hash.as_str()).is_match());
        }

        #[test]
        fn a_different_password_does_not_verify(a in "\\PC{1,40}", b in "\\PC{1,40}") {
            let hasher = fast_hasher();
            let a_norm: String = unicode_nfkc(&a);
            let b_norm: String = unicode_nfkc(&b);
            prop_assume!(a_norm != b_norm);
            let hash = hasher.hash(&Password::from(a.as_str())).unwrap();
            prop_assert_eq!(verify(&hasher, &b, hash.as_str()), Verification::Mismatch);
        }

        #[test]
        fn arbitrary_stored_strings_never_panic(
            prefix in prop::sample::select(vec![
                "", "$argon2id$", "$argon2id$v=19$m=64,t=1,p=1$", "$argon2i$v=16$",
                "$2b$04$", "$2a$", "$pbkdf2-sha256$i=1000,l=32$", "pbkdf2_sha256$1000$",
            ]),
            rest in ".{0,120}",
        ) {
            let hasher = fast_hasher();
            let stored = format!("{prefix}{rest}");
            let _ = hasher.verify(&Password::from("x"), &HashedPassword::new(stored));
        }
    }

    fn unicode_nfkc(s: &str) -> String {
        use unicode_normalization::UnicodeNormalization;
        s.nfkc().collect()
    }
}

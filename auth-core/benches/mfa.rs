//! The second factor's hot paths: TOTP verification (three HMACs, the
//! steps T-1, T and T+1, compared in constant time), opening a stored
//! secret (XChaCha20-Poly1305) and hashing a recovery code. Reports only;
//! nothing is asserted.
//!
//! Run with `cargo bench -p auth-core --bench mfa`.

#![allow(missing_docs)]

use std::hint::black_box;

use auth_core::mfa::{MfaKeys, TotpParams, TotpSecret, hash_recovery_code};
use criterion::{Criterion, criterion_group, criterion_main};

fn mfa_benches(c: &mut Criterion) {
    let params = TotpParams::default();
    let secret = TotpSecret::generate().expect("the OS CSPRNG");
    let now: u64 = 1_790_000_000;
    let code = params.code_at(&secret, now).expect("a code");
    let wrong = if code.as_str() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let at = i64::try_from(now).unwrap_or(i64::MAX);
    let mut group = c.benchmark_group("totp");
    group.bench_function("verify_right_code", |b| {
        b.iter(|| params.verify(black_box(&secret), black_box(code.as_str()), black_box(at)));
    });
    group.bench_function("verify_wrong_code", |b| {
        b.iter(|| params.verify(black_box(&secret), black_box(wrong), black_box(at)));
    });
    let keys = MfaKeys::generate("bench").expect("a key");
    let sealed = keys.seal("user-1", &secret).expect("sealed");
    group.bench_function("open_stored_secret", |b| {
        b.iter(|| keys.open(black_box("user-1"), black_box(&sealed)));
    });
    group.bench_function("hash_recovery_code", |b| {
        b.iter(|| hash_recovery_code(black_box("user-1"), black_box("ABCD-EFGH-IJKL-MNOP")));
    });
    group.finish();
}

criterion_group!(benches, mfa_benches);
criterion_main!(benches);

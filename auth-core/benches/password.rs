//! Hash and verify at the default parameters (Argon2id m=19456 KiB, t=2,
//! p=1), and the cheap policy check. Reports only; nothing is asserted.
//!
//! Run with `cargo bench -p auth-core --bench password`.

#![allow(missing_docs)]

use std::hint::black_box;

use auth_core::password::{Password, PasswordHasher, PasswordPolicy, PolicyContext};
use criterion::{Criterion, criterion_group, criterion_main};

fn password_benches(c: &mut Criterion) {
    let hasher = PasswordHasher::default();
    let password = Password::from("correct horse battery staple");
    let stored = hasher.hash(&password).unwrap();
    let wrong = Password::from("correct horse battery stapler");

    let mut group = c.benchmark_group("argon2id_default");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.iter(|| hasher.hash(black_box(&password)).unwrap());
    });
    group.bench_function("verify_match", |b| {
        b.iter(|| hasher.verify(black_box(&password), &stored).unwrap());
    });
    group.bench_function("verify_mismatch", |b| {
        b.iter(|| hasher.verify(black_box(&wrong), &stored).unwrap());
    });
    group.bench_function("verify_dummy", |b| {
        b.iter(|| hasher.verify_dummy(black_box(&wrong)).unwrap());
    });
    group.finish();

    let policy = PasswordPolicy::default();
    let context = PolicyContext::new()
        .with_word("alice")
        .with_word("Example App");
    c.bench_function("policy_check", |b| {
        b.iter(|| policy.check(black_box(&password), &context));
    });
}

criterion_group!(benches, password_benches);
criterion_main!(benches);

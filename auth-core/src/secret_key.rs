//! Map keys that are secrets (bearer tokens, password hashes): a lookup
//! compares the whole key in constant time, so the time it takes says
//! nothing about how much of one key matched another. (The standard string
//! comparison stops at the first byte that differs.)
//!
//! The map must be a `hashbrown` map (its lookups take an [`Equivalent`]
//! query, so a borrowed key needs no copy) under a hasher with a secret
//! random key, so which keys share a bucket is unpredictable too.

use std::hash::{Hash, Hasher};

use constant_time_eq::constant_time_eq;
use hashbrown::Equivalent;

/// A key the map owns.
pub(crate) struct SecretKey(Box<str>);

impl SecretKey {
    pub(crate) fn new(key: &str) -> Self {
        Self(Box::from(key))
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for SecretKey {}

/// Hashed as the string is, so a [`Lookup`] of the same text finds it.
impl Hash for SecretKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// The key of a lookup, borrowed.
pub(crate) struct Lookup<'a>(pub(crate) &'a str);

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<SecretKey> for Lookup<'_> {
    fn equivalent(&self, key: &SecretKey) -> bool {
        constant_time_eq(self.0.as_bytes(), key.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lookups find exactly the same text: not a prefix, not an extension,
    /// not another string of the same length.
    #[test]
    fn a_lookup_finds_only_the_same_key() {
        let mut map = hashbrown::HashMap::<SecretKey, u8, std::hash::RandomState>::default();
        map.insert(SecretKey::new("abcdef"), 1);
        map.insert(SecretKey::new("abcdeg"), 2);
        assert_eq!(map.get(&Lookup("abcdef")), Some(&1));
        assert_eq!(map.get(&Lookup("abcdeg")), Some(&2));
        for other in ["abcde", "abcdefg", "abcdex", "", "ABCDEF"] {
            assert_eq!(map.get(&Lookup(other)), None, "{other}");
        }
        map.insert(SecretKey::new("abcdef"), 3);
        assert_eq!(map.len(), 2, "the same key replaces its entry");
        assert_eq!(map.get(&Lookup("abcdef")), Some(&3));
    }
}

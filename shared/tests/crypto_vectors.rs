//! Known-answer tests for the crypto suite (docs/PROTOCOL.md, "Crypto suite").
//!
//! Every value below is derived from fixed seeds, so another implementation of the spec
//! can reproduce it byte for byte. Run `cargo test -p p1consent-shared --test
//! crypto_vectors -- --ignored print_vectors --nocapture` to print them afresh.

use p1consent_shared::crypto::{
    KemSecretKey, KemSuite, SigningIdentity, SymmetricKey, WrappedSecret,
    encapsulate_deterministic, hash, hex, seal_with_nonce,
};
use p1consent_shared::wire::{Reader, Writer};

struct KemVector {
    suite: KemSuite,
    /// BLAKE3 fingerprint of the encoded public key (the key itself is 1.2 KB).
    public_key_fingerprint: &'static str,
    /// hash("p1consent/v1/test-vector", ciphertext bytes)
    ciphertext_digest: &'static str,
    shared_secret: &'static str,
}

const KEM_SEED: [u8; 32] = [0x11; 32];
const ENCAP_SEED: [u8; 32] = [0x22; 32];

const KEM_VECTORS: &[KemVector] = &[
    KemVector {
        suite: KemSuite::X25519Sntrup761,
        public_key_fingerprint: "3efd85b1a62f2ea09fa48bfd0727f031ae0ecf1d346f9a3abece73a8fe1bd0ed",
        ciphertext_digest: "372754ee2699fe00adaa1e148aa6e92cbd0e3878e067995840486e0b18259acd",
        shared_secret: "42e92c818a537a3c168e1f51aafc45467aa6836f676e52928d48a9459879d95d",
    },
    KemVector {
        suite: KemSuite::X25519MlKem768,
        public_key_fingerprint: "e6993fbefd9e71e1c16815b632bc691e3446c606127131f226161324cae1c7ed",
        ciphertext_digest: "6dd3f2bef05ad69a830a18ecd51c6e572b57a236afc9d25aaceb5970326f4bcf",
        shared_secret: "5158a0c2374258a4ff3336371c2b5e7c8388f67cc2c6cc40a0452132c74b7c2c",
    },
];

const ED25519_SEED: [u8; 32] = [0x33; 32];
const ED25519_PUBLIC: &str = "17cb79fb2b4120f2b1ec65e4198d6e08b28e813feb01e4a400839b85e18080ce";
const ED25519_SIG_OF_ABC: &str = "87ba0a0bdc834e2435db8cb0e67dfa5818e4b08a06446b1d568804b4679eddc16b6a62ccc719bedf769f3ad4efa54791efdf357a7686c4ead1d51788423c3302";
const OPAQUE_ID: &str = "3c18834d1cf1caaab963f9e18f0b5353";

const AEAD_KEY: [u8; 32] = [0x44; 32];
const AEAD_NONCE: [u8; 24] = [0x55; 24];
const AEAD_SEALED_HELLO: &str = "651dc6b22319a6d5f121a5d984114bbba56bfa758b";
const DERIVED_KEY: &str = "32217847fd58f4d57844f82506e3e294e2ef17f202e31174bd2b922236fa019e";

fn kem_outputs(suite: KemSuite) -> (String, String, String) {
    let sk = KemSecretKey::from_seed(suite, &KEM_SEED);
    let (ct, ss) = encapsulate_deterministic(sk.public(), &ENCAP_SEED).unwrap();
    let mut w = Writer::new();
    ct.write(&mut w);
    // The receiver recovers the same secret from the encoded ciphertext.
    let decoded =
        p1consent_shared::crypto::KemCiphertext::read(&mut Reader::new(w.as_slice())).unwrap();
    assert_eq!(sk.decapsulate(&decoded).unwrap(), ss);
    (
        hex(&sk.public().fingerprint()),
        hex(&hash("p1consent/v1/test-vector", &[w.as_slice()])),
        hex(ss.expose()),
    )
}

#[test]
fn kem_known_answers() {
    for v in KEM_VECTORS {
        let (fp, ct, ss) = kem_outputs(v.suite);
        assert_eq!(fp, v.public_key_fingerprint, "{:?} public key", v.suite);
        assert_eq!(ct, v.ciphertext_digest, "{:?} ciphertext", v.suite);
        assert_eq!(ss, v.shared_secret, "{:?} shared secret", v.suite);
    }
}

#[test]
fn ed25519_known_answers() {
    let id = SigningIdentity::from_seed(&ED25519_SEED);
    assert_eq!(id.public().to_hex(), ED25519_PUBLIC);
    assert_eq!(hex(&id.sign(b"abc")), ED25519_SIG_OF_ABC);
    assert_eq!(id.public().opaque_id().to_hex(), OPAQUE_ID);
}

#[test]
fn aead_and_kdf_known_answers() {
    let key = SymmetricKey::from_bytes(AEAD_KEY);
    assert_eq!(
        hex(&seal_with_nonce(&key, &AEAD_NONCE, b"aad", b"hello")),
        AEAD_SEALED_HELLO
    );
    assert_eq!(
        hex(key.derive("p1consent/v1/test", b"ctx").expose()),
        DERIVED_KEY
    );
}

#[test]
fn wrapped_secret_opens_only_for_its_reader_and_context() {
    for suite in [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768] {
        let reader = KemSecretKey::from_seed(suite, &KEM_SEED);
        let stranger = KemSecretKey::generate(suite);
        let w = WrappedSecret::wrap(reader.public(), &[7; 32], b"context").unwrap();
        let mut out = Writer::new();
        w.write(&mut out);
        let back = WrappedSecret::read(&mut Reader::new(out.as_slice())).unwrap();
        assert_eq!(&back.unwrap(&reader, b"context").unwrap()[..], &[7; 32]);
        assert!(back.unwrap(&reader, b"other").is_err());
        assert!(back.unwrap(&stranger, b"context").is_err());
    }
}

#[test]
#[ignore = "prints the vectors; run by hand when the suite changes on purpose"]
fn print_vectors() {
    for v in KEM_VECTORS {
        let (fp, ct, ss) = kem_outputs(v.suite);
        println!("{:?}\n  fp {fp}\n  ct {ct}\n  ss {ss}", v.suite);
    }
    let id = SigningIdentity::from_seed(&ED25519_SEED);
    println!("ed25519 public {}", id.public().to_hex());
    println!("ed25519 sig(abc) {}", hex(&id.sign(b"abc")));
    println!("opaque id {}", id.public().opaque_id().to_hex());
    let key = SymmetricKey::from_bytes(AEAD_KEY);
    println!(
        "aead {}",
        hex(&seal_with_nonce(&key, &AEAD_NONCE, b"aad", b"hello"))
    );
    println!(
        "derived {}",
        hex(key.derive("p1consent/v1/test", b"ctx").expose())
    );
}

/// RFC 8032 section 7.1, test 1: our identities are plain Ed25519.
#[test]
fn ed25519_matches_rfc8032() {
    let seed = p1consent_shared::crypto::unhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    )
    .unwrap();
    let id = SigningIdentity::from_seed(&seed.try_into().unwrap());
    assert_eq!(
        id.public().to_hex(),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(
        hex(&id.sign(b"")),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}

//! Consent log entries. The entry body is sealed, so the event decoder is fuzzed directly on
//! plaintext: input byte 0 picks the author role, the rest is the body for `Event::decode`
//! (must never panic; an accepted body re-encodes to the same bytes). The whole input is also
//! fed to `EntryHeader::peek` and to `ThreadLog::verify` as a complete entry (as is and
//! re-signed with the test key).
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{consent_thread, resign, test_signer};
use p1consent_shared::consent::thread::Role;
use p1consent_shared::consent::log::{EntryHeader, Event, Participants, ThreadLog};
use p1consent_shared::consent::ThreadKey;

fuzz_target!(|data: &[u8]| {
    let _ = EntryHeader::peek(data);
    let me = test_signer().public();
    let participants = Participants {
        owner: me,
        device: Some(me),
        provider: Some(me),
    };
    // The consent vectors' thread, every role signing with the test key: a re-signed vector
    // entry gets through signature and AEAD to the event decoder.
    let (thread_id, key) = consent_thread();
    let _ = ThreadLog::new(thread_id, ThreadKey::from_bytes(key), participants).verify(data);
    if let Some(signed) = resign(data, None, test_signer(), None) {
        let _ = ThreadLog::new(thread_id, ThreadKey::from_bytes(key), participants).verify(&signed);
    }

    let Some((&role, body)) = data.split_first() else {
        return;
    };
    let Ok(role) = Role::from_byte(role) else {
        return;
    };
    if let Ok(ev) = Event::decode(body, role) {
        assert_eq!(ev.author_role(), role);
        let _ = ev.name();
        let enc = ev.encode();
        assert_eq!(enc, body, "accepted event body is not canonical");
        let again = Event::decode(&enc, role).expect("re-encoded event decodes");
        assert_eq!(again, ev);
    }
});

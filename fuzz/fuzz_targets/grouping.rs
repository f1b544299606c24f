//! Arbitrary text through the normaliser and the grouper: a template and a fingerprint,
//! never a panic; the same message always gets the same fingerprint, and a template's
//! word count never exceeds the message's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let template = vigil_engine::template(text);
    assert!(template.split_whitespace().count() <= text.split_whitespace().count().max(1));
    let grouper = vigil_engine::Grouper::default();
    let a = grouper.group(Some("s"), None, text, None);
    let b = grouper.group(Some("s"), None, text, None);
    assert_eq!(a.fingerprint, b.fingerprint);
});

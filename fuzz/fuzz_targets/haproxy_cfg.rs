//! The haproxy.cfg importer never panics, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut diags = vec![];
        let _ = cohort_spec::haproxy::read_haproxy(text, None, &mut cohort_spec::diag::Sink::new("haproxy.cfg", &mut diags));
    }
});

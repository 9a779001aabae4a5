//! The router config reader (YAML with positions) never panics, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(node) = cohort_yaml::parse(text)
    {
        let mut diags = vec![];
        let _ = cohort_spec::router_config::read_router_config(
            &node,
            &mut cohort_spec::diag::Sink::new("router.yaml", &mut diags),
        );
    }
});

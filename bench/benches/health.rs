//! Criterion benchmark of `cohort status`'s evaluation on a namespace at ten times the
//! seed's size (1,500 services, 7,000 endpoints), generated from objects a real API server
//! returned. See bench/README.md for the figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn evaluation(c: &mut Criterion) {
    let inv = cohort_bench::namespace::seed_times(1_500);
    let settings = cohort_health::Settings::defaults("2026-11-22T04:06:01Z".parse().expect("time"));
    let mut g = c.benchmark_group("status");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1_500));
    g.bench_function("evaluate_1500_services", |b| {
        b.iter(|| {
            cohort_health::evaluate(black_box(&inv), None, &settings)
                .services
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);

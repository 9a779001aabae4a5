//! Criterion benchmarks of the release repo's hot paths, at the seed's size (30 services)
//! and ten times it (300): parse + validate, render, and both end to end.
//! See bench/README.md for how to run them and what was measured.

use std::hint::black_box;
use std::time::Duration;

use cohort_spec::repo::{Repo, RepoFiles, validate};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Service counts: the seed's size, and ten times it.
const SIZES: [usize; 2] = [30, 300];

fn valid(files: &RepoFiles) -> Repo {
    let (repo, diags) = validate(files);
    assert!(diags.is_empty(), "the generated repo has diagnostics: {diags:?}");
    repo.expect("a generated repo with no diagnostics validates")
}

/// Renders every service as `cohort render --out DIR` does: objects, then one YAML stream
/// per service. Returns the number of bytes of YAML, so nothing is optimised away.
fn render_all(repo: &Repo) -> usize {
    repo.services
        .iter()
        .map(|svc| {
            let objects = cohort_render::render_service(&repo.pipeline, svc)
                .expect("typed objects of a valid repo always serialize");
            cohort_render::to_yaml(&objects).len()
        })
        .sum()
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn bench_validate(c: &mut Criterion) {
    let mut g = group(c, "validate");
    for n in SIZES {
        let files = cohort_bench::seed_times(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, files| {
            b.iter(|| validate(black_box(files)))
        });
    }
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let mut g = group(c, "render");
    for n in SIZES {
        let repo = valid(&cohort_bench::seed_times(n));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &repo, |b, repo| {
            b.iter(|| render_all(black_box(repo)))
        });
    }
    g.finish();
}

fn bench_end_to_end(c: &mut Criterion) {
    let mut g = group(c, "validate_and_render");
    for n in SIZES {
        let files = cohort_bench::seed_times(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, files| {
            b.iter(|| render_all(&valid(black_box(files))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_validate, bench_render, bench_end_to_end);
criterion_main!(benches);

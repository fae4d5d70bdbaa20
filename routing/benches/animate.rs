//! Host micro-benchmark of `say`: one 200-character line through the default
//! English rules. Run with `cargo bench -p routing --bench animate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use routing::animator::{default_animator, Animator};

/// 200 characters with greetings, a question, an exclamation, thanks, emoji.
const LINE: &str = "Hello there, friend! It is so great to see you again today. \
How have you been lately? I heard the news and honestly, thank you so much for \
helping me out :) Sorry I was late, haha. See you soon, bye 😊";

fn bench(c: &mut Criterion) {
    let a = default_animator().unwrap();
    assert_eq!(LINE.chars().count(), 200, "{}", LINE.chars().count());
    let out = a.animate(LINE, None).unwrap();
    eprintln!(
        "animate: {} commands: {:?}",
        out.len(),
        out.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
    );
    c.bench_function("animate_200_chars_default_en", |b| {
        b.iter(|| a.animate(black_box(LINE), None).unwrap())
    });
    c.bench_function("default_animator_compile", |b| {
        b.iter(|| default_animator().unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

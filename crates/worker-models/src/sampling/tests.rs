use super::*;

#[test]
fn greedy_takes_the_max_and_penalty_changes_it() {
    let mut s = Sampler::new(SamplingParams::greedy(), &[]);
    assert_eq!(s.sample(&mut [0.1, 2.0, 1.9]), 1);
    let params = SamplingParams {
        repeat_penalty: 1.5,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(params, &[1]);
    assert_eq!(s.sample(&mut [0.1, 2.0, 1.9]), 2);
}

#[test]
fn same_seed_same_tokens() {
    let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let draw = |seed| {
        let mut s = Sampler::new(
            SamplingParams {
                seed: Some(seed),
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.0,
                ..Default::default()
            },
            &[],
        );
        (0..20)
            .map(|_| s.sample(&mut logits.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[test]
fn top_k_one_is_greedy() {
    let mut s = Sampler::new(
        SamplingParams {
            top_k: 1,
            temperature: 1.5,
            seed: Some(1),
            ..Default::default()
        },
        &[],
    );
    for _ in 0..10 {
        assert_eq!(s.sample(&mut [0.0, 0.5, 3.0, 2.9]), 2);
    }
}

/// A fixed pseudo-random row of `n` logits in [-8, 8), with ties.
fn row(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    (0..n)
        .map(|_| (rng.random::<f32>() * 64.0).floor() / 4.0 - 8.0)
        .collect()
}

#[test]
fn the_top_candidates_give_the_same_choice_as_the_whole_row() {
    // (temperature, top_k, top_p, min_p, repeat, frequency, presence,
    // a bias on tokens 7 and 260)
    let cases = [
        (0.0, 0, 1.0, 0.0, 1.3, 0.0, 0.0, 0.0),
        (0.8, 40, 0.95, 0.05, 1.0, 0.0, 0.0, 0.0),
        (0.8, 40, 0.95, 0.05, 1.3, 0.0, 0.0, 0.0),
        (1.5, 1, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0),
        (1.0, 5, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0),
        (0.7, 300, 0.5, 0.0, 1.1, 0.0, 0.0, 0.0),
        (1.2, 64, 1.0, 0.2, 1.0, 0.0, 0.0, 0.0),
        (0.9, 10, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0),
        (0.9, 10, 0.9, 0.0, 1.1, 0.3, 0.4, 0.0),
        (0.0, 0, 1.0, 0.0, 1.0, 0.0, 1.5, 0.0),
        (0.8, 20, 1.0, 0.0, 1.0, 0.0, 0.0, -100.0),
        (0.0, 0, 1.0, 0.0, 1.0, 0.2, 0.0, -3.0),
    ];
    for (i, &(temperature, top_k, top_p, min_p, repeat_penalty, frequency, presence, bias)) in
        cases.iter().enumerate()
    {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            frequency_penalty: frequency,
            presence_penalty: presence,
            repeat_last_n: 16,
            logit_bias: if bias == 0.0 {
                Vec::new()
            } else {
                vec![(7, bias), (260, bias)]
            },
            seed: Some(i as u64),
        };
        let prompt: Vec<u32> = (0..30).map(|t| (t * 37) % 500).collect();
        let mut whole = Sampler::new(params.clone(), &prompt);
        let mut top = Sampler::new(params, &prompt);
        let mut cands = Vec::new();
        for step in 0..40 {
            let logits = row(500, 100 * i as u64 + step);
            let Want::Top(n) = top.want() else {
                panic!("case {i} should take candidates, not {:?}", top.want());
            };
            select::top_k(&logits, n, &mut cands);
            let a = whole.sample(&mut logits.clone());
            let b = top.sample_top(&cands);
            assert_eq!(a, b, "case {i}, step {step}");
            whole.accept(a);
            top.accept(b);
        }
    }
}

#[test]
fn what_each_setting_needs() {
    let want = |params: SamplingParams, prompt: &[u32]| Sampler::new(params, prompt).want();
    assert_eq!(want(SamplingParams::greedy(), &[]), Want::Argmax);
    let base = SamplingParams {
        seed: Some(1),
        ..Default::default()
    };
    assert_eq!(want(base.clone(), &[]), Want::Top(40));
    let penalized = SamplingParams {
        repeat_penalty: 1.1,
        ..base.clone()
    };
    assert_eq!(want(penalized.clone(), &[3, 4, 3, 9]), Want::Top(43));
    let greedy_penalized = SamplingParams {
        temperature: 0.0,
        ..penalized
    };
    assert_eq!(want(greedy_penalized, &[3, 4]), Want::Top(3));
    let boost = SamplingParams {
        repeat_penalty: 0.9,
        ..base.clone()
    };
    assert_eq!(want(boost, &[3]), Want::Logits);
    let frequent = SamplingParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.1,
        ..base.clone()
    };
    assert_eq!(want(frequent, &[3, 4, 3]), Want::Top(42));
    let favour_repeats = SamplingParams {
        presence_penalty: -0.5,
        ..base.clone()
    };
    assert_eq!(want(favour_repeats, &[3]), Want::Logits);
    let banned = SamplingParams {
        logit_bias: vec![(3, -100.0), (9, -1.0)],
        ..base.clone()
    };
    assert_eq!(want(banned, &[]), Want::Top(42));
    let boosted = SamplingParams {
        logit_bias: vec![(3, 5.0)],
        ..base.clone()
    };
    assert_eq!(want(boosted, &[]), Want::Logits);
    let greedy_biased = SamplingParams {
        logit_bias: vec![(3, -100.0)],
        ..SamplingParams::greedy()
    };
    assert_eq!(want(greedy_biased, &[]), Want::Top(2));
    let all = SamplingParams {
        top_k: 0,
        ..base.clone()
    };
    assert_eq!(want(all, &[]), Want::Logits);
    let temperature_only = SamplingParams {
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..base
    };
    assert_eq!(want(temperature_only, &[]), Want::Draw);
    assert_eq!(Want::Draw.and(Want::Argmax), Want::Draw);
    assert_eq!(Want::Draw.and(Want::Top(5)), Want::Logits);
}

#[test]
fn a_draw_made_elsewhere_picks_what_the_sampler_picks() {
    let params = SamplingParams {
        temperature: 0.9,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(21),
        ..Default::default()
    };
    let (mut here, mut there) = (Sampler::new(params.clone(), &[]), Sampler::new(params, &[]));
    let mut scratch = draw::Scratch::default();
    for step in 0..50 {
        let logits = row(3000, step);
        let (t, u) = there.draw_params();
        assert_eq!(
            here.sample(&mut logits.clone()),
            draw::draw(&logits, t, u, &mut scratch),
            "step {step}"
        );
    }
}

#[test]
fn draws_follow_the_tempered_distribution() {
    let logits = [0.0f32, 1.0, 2.0, 3.0];
    for temperature in [1.0f32, 0.5] {
        let mut s = Sampler::new(
            SamplingParams {
                temperature,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed: Some(11),
                ..Default::default()
            },
            &[],
        );
        let n = 40_000;
        let mut count = [0usize; 4];
        for _ in 0..n {
            count[s.sample(&mut logits.clone()) as usize] += 1;
        }
        let z: f32 = logits.iter().map(|l| (l / temperature).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let want = (l / temperature).exp() / z;
            let got = count[i] as f32 / n as f32;
            assert!(
                (got - want).abs() < 0.01,
                "T {temperature}, token {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn top_p_within_the_top_candidates_picks_what_the_whole_row_picks() {
    let mut rng = Pcg64Mcg::seed_from_u64(9);
    for case in 0..12 {
        // Peaked rows: a few dozen strong tokens over a long tail.
        let n = 5000;
        let mut row: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0).collect();
        for _ in 0..40 {
            let i = rng.random_range(0..n);
            row[i] += 6.0 + rng.random::<f32>() * 4.0;
        }
        let params = SamplingParams {
            temperature: [0.7, 1.0, 1.3][case % 3],
            top_k: 0,
            top_p: [0.5, 0.9, 0.95][case % 3],
            min_p: [0.0, 0.05][case % 2],
            seed: Some(case as u64),
            ..Default::default()
        };
        let mut fast = Sampler::new(params.clone(), &[]);
        let mut whole = Sampler::new(params, &[]);
        let mut c = Vec::new();
        assert!(
            fast.nucleus_in_top(&row, &mut c).is_some(),
            "case {case}: the nucleus lies within the top candidates"
        );
        let mut fast = Sampler::new(fast.params.clone(), &[]);
        for step in 0..300 {
            let got = fast.sample(&mut row.clone());
            let mut all: Vec<(u32, f32)> = row
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect();
            let want = whole.finish(&mut all);
            assert_eq!(got, want, "case {case} step {step}");
        }
    }
}

#[test]
fn penalties_and_biases_follow_llama_cpp() {
    let greedy = |p: SamplingParams, prompt: &[u32], row: &[f32]| {
        Sampler::new(
            SamplingParams {
                temperature: 0.0,
                repeat_last_n: 8,
                ..p
            },
            prompt,
        )
        .sample(&mut row.to_vec())
    };
    let row = [2.0f32, 1.9, 1.5, -1.0];
    // Token 0 was seen twice: frequency 0.1 lowers it by 0.2, below 1.
    let freq = SamplingParams {
        frequency_penalty: 0.1,
        ..Default::default()
    };
    assert_eq!(greedy(freq.clone(), &[0, 0], &row), 1);
    assert_eq!(greedy(freq, &[0], &row), 0);
    // Presence once, whatever the count.
    let presence = SamplingParams {
        presence_penalty: 0.6,
        ..Default::default()
    };
    assert_eq!(greedy(presence, &[0, 0, 0, 1], &row), 2);
    // A bias bans or favours.
    let ban = SamplingParams {
        logit_bias: vec![(0, -100.0)],
        ..Default::default()
    };
    assert_eq!(greedy(ban, &[], &row), 1);
    let favour = SamplingParams {
        logit_bias: vec![(3, 3.5)],
        ..Default::default()
    };
    assert_eq!(greedy(favour, &[], &row), 3);
}

#[test]
fn an_infinite_logit_is_always_chosen_when_candidates_are_cut() {
    let mut row = vec![0.5f32; 5000];
    row[4321] = f32::INFINITY;
    row[7] = f32::NEG_INFINITY;
    for (top_k, top_p, min_p) in [(0, 0.9, 0.0), (40, 1.0, 0.0), (0, 1.0, 0.05)] {
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_k,
                top_p,
                min_p,
                seed: Some(1),
                ..Default::default()
            },
            &[],
        );
        for _ in 0..20 {
            assert_eq!(s.sample(&mut row.clone()), 4321, "{top_k} {top_p} {min_p}");
        }
    }
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_the_mass() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled id order).
    let probs = [0.15f32, 0.5, 0.05, 0.3];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    for (top_p, allowed) in [(0.45, vec![1]), (0.79, vec![1, 3]), (0.9, vec![0, 1, 3])] {
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p,
                min_p: 0.0,
                seed: Some(5),
                ..Default::default()
            },
            &[],
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            seen.insert(s.sample(&mut logits.clone()));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            allowed,
            "top_p {top_p}"
        );
    }
}

#[test]
fn min_p_and_top_p_cut_the_tail() {
    let mut s = Sampler::new(
        SamplingParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            temperature: 1.0,
            seed: Some(3),
            ..Default::default()
        },
        &[],
    );
    for _ in 0..50 {
        let t = s.sample(&mut [5.0, 4.9, 0.0, -1.0]);
        assert!(t == 0 || t == 1);
    }
}

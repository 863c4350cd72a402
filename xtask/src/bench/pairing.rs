//! The order contenders run in within a repetition, and ratios paired by repetition: on a
//! host whose speed drifts, comparisons within one repetition are the ones to trust.

/// Items with their indices, starting at a different one each repetition: on a host
/// whose load drifts during a case, a fixed order would favour whoever runs at the better end
/// (each item takes each position once in `items.len()` repetitions).
pub fn rotated<T>(items: &[T], rep: usize) -> impl Iterator<Item = (usize, &T)> {
    let n = items.len().max(1);
    (0..items.len()).filter_map(move |k| {
        let i = (k + rep) % n;
        items.get(i).map(|c| (i, c))
    })
}

/// Contender indices for repetition `rep` when `pair` is the comparison that matters: the
/// rotation of [`rotated`], with the pair's two places swapped on every other pass over `n`.
/// Listed next to each other, the pair runs back to back in most repetitions, each side first
/// equally often over `2 * n` repetitions.
pub fn paired_order(n: usize, rep: usize, pair: (usize, usize)) -> Vec<usize> {
    let swap = (rep / n.max(1)) % 2 == 1;
    (0..n)
        .map(|k| (k + rep) % n)
        .map(|i| match i {
            _ if !swap => i,
            i if i == pair.0 => pair.1,
            i if i == pair.1 => pair.0,
            i => i,
        })
        .collect()
}

/// Per repetition, `a`'s value over `b`'s from the same repetition (drift between repetitions
/// cancels); repetitions where `b` measured nothing are left out.
pub fn paired(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotation_puts_every_item_in_every_position_once() {
        let items = ["direct", "lb", "haproxy", "nginx"];
        let mut seen = [[0; 4]; 4];
        for rep in 0..4 {
            let order: Vec<usize> = super::rotated(&items, rep).map(|(i, _)| i).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3], "rep {rep} runs each item once");
            for (pos, i) in order.into_iter().enumerate() {
                seen[i][pos] += 1;
            }
        }
        assert!(seen.iter().flatten().all(|&n| n == 1), "{seen:?}");
        assert_eq!(super::rotated::<u8>(&[], 3).count(), 0);
    }

    #[test]
    fn paired_order_puts_the_pair_first_equally_often() {
        let n = 5;
        let (lb, haproxy) = (1, 2);
        let (mut lb_first, mut adjacent) = (0, 0);
        let mut seen = [[0; 5]; 5];
        for rep in 0..2 * n {
            let order = super::paired_order(n, rep, (lb, haproxy));
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [0, 1, 2, 3, 4],
                "rep {rep} runs each contender once"
            );
            for (pos, &i) in order.iter().enumerate() {
                seen[i][pos] += 1;
            }
            let at = |c| order.iter().position(|&i| i == c).unwrap_or(usize::MAX);
            lb_first += usize::from(at(lb) < at(haproxy));
            adjacent += usize::from(at(lb).abs_diff(at(haproxy)) == 1);
        }
        assert_eq!(lb_first, n, "each side first in half the repetitions");
        assert_eq!(adjacent, 2 * (n - 1), "back to back except at the wrap");
        assert!(seen.iter().flatten().all(|&k| k == 2), "{seen:?}");
    }

    #[test]
    fn paired_ratios_skip_empty_repetitions() {
        assert_eq!(
            super::paired(&[2.0, 3.0, 4.0], &[1.0, 0.0, 2.0]),
            [2.0, 2.0]
        );
        assert!(super::paired(&[1.0], &[]).is_empty());
    }
}

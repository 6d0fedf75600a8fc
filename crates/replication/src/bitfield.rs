//! Which blocks a core holds: a sparse bitfield (hypercore `lib/bitfield.js` keeps the same
//! information in 32768-bit pages).
//!
//! The bitfield is split into pages of [`PAGE_BITS`] bits. A page that is entirely clear is
//! not stored; a page that is entirely set is stored as a marker without bits; only mixed
//! pages hold 4 KiB of words. A fully downloaded core of any length therefore costs a few
//! bytes per 32768 blocks, and a sparse one 4 KiB per touched page.

use std::collections::BTreeMap;
use std::ops::Range;

/// Bits per page (as in JS hypercore).
pub const PAGE_BITS: u64 = 32768;
const WORDS: usize = (PAGE_BITS / 64) as usize;

#[derive(Clone, PartialEq, Eq)]
enum Page {
    /// Every bit set.
    Full,
    /// Some bits set; `ones` counts them (never 0 or `PAGE_BITS`).
    Bits { words: Box<[u64; WORDS]>, ones: u32 },
}

/// A sparse set of block indexes.
///
/// ```
/// use corenet_replication::Bitfield;
/// let mut b = Bitfield::new();
/// b.set_range(0..10, true);
/// b.set(4, false);
/// assert!(b.get(3) && !b.get(4));
/// assert_eq!(b.missing(0..12).collect::<Vec<_>>(), [4..5, 10..12]);
/// assert_eq!(b.find_first(false, 0), 4);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bitfield {
    /// Pages by page number; absent pages are all clear.
    pages: BTreeMap<u64, Page>,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitfield")
            .field("pages", &self.pages.len())
            .field(
                "ranges",
                &self.ranges(0..u64::MAX).take(8).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn split(i: u64) -> (u64, usize) {
    (i / PAGE_BITS, (i % PAGE_BITS) as usize)
}

/// Mask of bits `from..to` (0..=64) of a word.
fn mask(from: usize, to: usize) -> u64 {
    debug_assert!(from <= to && to <= 64);
    if from == to {
        return 0;
    }
    let hi = if to == 64 { u64::MAX } else { (1u64 << to) - 1 };
    hi & !((1u64 << from) - 1)
}

impl Bitfield {
    /// An empty bitfield.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when bit `i` is set.
    pub fn get(&self, i: u64) -> bool {
        let (p, o) = split(i);
        match self.pages.get(&p) {
            None => false,
            Some(Page::Full) => true,
            Some(Page::Bits { words, .. }) => words[o / 64] & (1 << (o % 64)) != 0,
        }
    }

    /// Sets or clears bit `i`.
    pub fn set(&mut self, i: u64, value: bool) {
        self.set_range(i..i.saturating_add(1), value);
    }

    /// Sets or clears every bit in `range`.
    ///
    /// Clearing costs one step per stored page in the range, so clearing everything from an
    /// index on (`set_range(i..u64::MAX, false)`) is cheap; setting costs one step per page.
    pub fn set_range(&mut self, range: Range<u64>, value: bool) {
        let mut start = range.start;
        let end = range.end;
        if !value {
            if start >= end {
                return;
            }
            let (first, _) = split(start);
            let (last, _) = split(end - 1);
            let pages: Vec<u64> = self.pages.range(first..=last).map(|(p, _)| *p).collect();
            for p in pages {
                let from = start.max(p * PAGE_BITS);
                let to = end.min((p + 1).saturating_mul(PAGE_BITS));
                self.set_in_page(
                    p,
                    (from - p * PAGE_BITS) as usize,
                    (to - p * PAGE_BITS) as usize,
                    false,
                );
            }
            return;
        }
        while start < end {
            let (p, o) = split(start);
            let page_end = (p + 1).saturating_mul(PAGE_BITS);
            let stop = end.min(page_end);
            let to = o + (stop - start) as usize;
            self.set_in_page(p, o, to, value);
            start = stop;
        }
    }

    /// Sets bits `from..to` of page `p`.
    fn set_in_page(&mut self, p: u64, from: usize, to: usize, value: bool) {
        let whole = from == 0 && to == PAGE_BITS as usize;
        if whole {
            if value {
                self.pages.insert(p, Page::Full);
            } else {
                self.pages.remove(&p);
            }
            return;
        }
        let page = match self.pages.get_mut(&p) {
            None if !value => return,
            Some(Page::Full) if value => return,
            None => self.pages.entry(p).or_insert(Page::Bits {
                words: Box::new([0; WORDS]),
                ones: 0,
            }),
            Some(page @ Page::Full) => {
                *page = Page::Bits {
                    words: Box::new([u64::MAX; WORDS]),
                    ones: PAGE_BITS as u32,
                };
                page
            }
            Some(page) => page,
        };
        let Page::Bits { words, ones } = page else {
            return;
        };
        let mut i = from;
        while i < to {
            let w = i / 64;
            let hi = to.min((w + 1) * 64);
            let m = mask(i % 64, hi - w * 64);
            let before = words[w].count_ones();
            if value {
                words[w] |= m;
            } else {
                words[w] &= !m;
            }
            *ones = *ones + words[w].count_ones() - before;
            i = hi;
        }
        match *ones {
            0 => {
                self.pages.remove(&p);
            }
            n if n == PAGE_BITS as u32 => {
                self.pages.insert(p, Page::Full);
            }
            _ => {}
        }
    }

    /// True when every bit in `range` is set (an empty range counts as set).
    pub fn has_all(&self, range: Range<u64>) -> bool {
        range.is_empty() || self.find_first(false, range.start) >= range.end
    }

    /// True when no bit is set.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Number of set bits in `range`.
    pub fn count(&self, range: Range<u64>) -> u64 {
        self.ranges(range).map(|r| r.end - r.start).sum()
    }

    /// The first index `>= from` whose bit equals `value`. Clear bits never run out, so
    /// `find_first(false, _)` always finds one; for set bits the answer is `u64::MAX` when
    /// there is none.
    pub fn find_first(&self, value: bool, from: u64) -> u64 {
        if value {
            self.next_set(from).unwrap_or(u64::MAX)
        } else {
            self.next_clear(from)
        }
    }

    fn next_set(&self, from: u64) -> Option<u64> {
        let (p0, o0) = split(from);
        for (&p, page) in self.pages.range(p0..) {
            let start = if p == p0 { o0 } else { 0 };
            match page {
                Page::Full => return Some(p * PAGE_BITS + start as u64),
                Page::Bits { words, .. } => {
                    if let Some(o) = scan(words, start, true) {
                        return Some(p * PAGE_BITS + o as u64);
                    }
                }
            }
        }
        None
    }

    fn next_clear(&self, from: u64) -> u64 {
        let (mut p, mut o) = split(from);
        loop {
            match self.pages.get(&p) {
                None => return p * PAGE_BITS + o as u64,
                Some(Page::Full) => {}
                Some(Page::Bits { words, .. }) => {
                    if let Some(i) = scan(words, o, false) {
                        return p * PAGE_BITS + i as u64;
                    }
                }
            }
            p += 1;
            o = 0;
            if p.checked_mul(PAGE_BITS).is_none() {
                return u64::MAX;
            }
        }
    }

    /// The last index `< before` whose bit is set, if any.
    pub fn find_last_set(&self, before: u64) -> Option<u64> {
        if before == 0 {
            return None;
        }
        let last = before - 1;
        let (p0, o0) = split(last);
        for (&p, page) in self.pages.range(..=p0).rev() {
            let top = if p == p0 { o0 } else { PAGE_BITS as usize - 1 };
            match page {
                Page::Full => return Some(p * PAGE_BITS + top as u64),
                Page::Bits { words, .. } => {
                    for w in (0..=top / 64).rev() {
                        let hi = if w == top / 64 { top % 64 + 1 } else { 64 };
                        let bits = words[w] & mask(0, hi);
                        if bits != 0 {
                            return Some(
                                p * PAGE_BITS + (w * 64) as u64 + 63 - bits.leading_zeros() as u64,
                            );
                        }
                    }
                }
            }
        }
        None
    }

    /// The runs of clear bits within `range`, in order: what `download(range)` still has to
    /// fetch.
    pub fn missing(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let end = range.end;
        let mut at = range.start;
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let z = self.next_clear(at);
            if z >= end {
                at = end;
                return None;
            }
            let o = self.next_set(z).unwrap_or(u64::MAX).min(end);
            at = o;
            Some(z..o)
        })
    }

    /// The runs of set bits within `range`, in order.
    pub fn ranges(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let end = range.end;
        let mut at = range.start;
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let s = self.next_set(at)?;
            if s >= end {
                at = end;
                return None;
            }
            let z = self.next_clear(s).min(end);
            at = z;
            Some(s..z)
        })
    }

    /// `count` 32-bit words of bits from bit `start` (a multiple of 32), least significant
    /// bit first: the `Uint32Array` layout of the wire `bitfield` message.
    pub fn words_u32(&self, start: u64, count: usize) -> Vec<u32> {
        debug_assert_eq!(start % 32, 0, "bitfield words start on a word boundary");
        let mut out = vec![0u32; count];
        for r in self.ranges(start..start.saturating_add(32 * count as u64)) {
            let (mut i, end) = (r.start - start, r.end - start);
            while i < end {
                let w = (i / 32) as usize;
                let hi = end.min((i / 32 + 1) * 32);
                let from = (i % 32) as usize;
                let to = from + (hi - i) as usize;
                out[w] |= mask(from, to) as u32;
                i = hi;
            }
        }
        out
    }
}

/// First bit `>= from` in `words` equal to `value`.
fn scan(words: &[u64; WORDS], from: usize, value: bool) -> Option<usize> {
    let mut w = from / 64;
    let mut bits = if value { words[w] } else { !words[w] } & mask(from % 64, 64);
    loop {
        if bits != 0 {
            return Some(w * 64 + bits.trailing_zeros() as usize);
        }
        w += 1;
        if w == WORDS {
            return None;
        }
        bits = if value { words[w] } else { !words[w] };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pages_collapse() {
        let mut b = Bitfield::new();
        b.set_range(0..PAGE_BITS * 3, true);
        assert_eq!(b.pages.len(), 3);
        assert!(b.pages.values().all(|p| *p == Page::Full));
        b.set(PAGE_BITS + 5, false);
        assert!(!b.get(PAGE_BITS + 5));
        assert_eq!(b.find_first(false, 0), PAGE_BITS + 5);
        b.set(PAGE_BITS + 5, true);
        assert!(b.pages.values().all(|p| *p == Page::Full));
        b.set_range(0..PAGE_BITS * 3, false);
        assert!(b.is_empty());
    }

    #[test]
    fn sparse_far_out() {
        let mut b = Bitfield::new();
        b.set(1 << 40, true);
        assert_eq!(b.find_first(true, 0), 1 << 40);
        assert_eq!(b.find_last_set(u64::MAX), Some(1 << 40));
        assert_eq!(b.count(0..u64::MAX), 1);
        assert_eq!(
            b.missing((1 << 40) - 2..(1 << 40) + 2).collect::<Vec<_>>(),
            [(1 << 40) - 2..1 << 40, (1 << 40) + 1..(1 << 40) + 2]
        );
    }

    #[test]
    fn words_layout() {
        let mut b = Bitfield::new();
        b.set(0, true);
        b.set(33, true);
        assert_eq!(b.words_u32(0, 2), [1, 2]);
    }

    proptest! {
        #[test]
        fn matches_a_bool_vector(ops in proptest::collection::vec((0u64..70_000, 0u64..40_000, any::<bool>()), 1..40)) {
            let n = 110_000u64;
            let mut model = vec![false; n as usize];
            let mut b = Bitfield::new();
            for (start, len, v) in ops {
                let end = (start + len).min(n);
                b.set_range(start..end, v);
                for i in start..end { model[i as usize] = v; }
            }
            let probe = [0u64, 1, 63, 64, 32767, 32768, 40_000, 65_535, 65_536, 99_999];
            for &p in &probe {
                prop_assert_eq!(b.get(p), model[p as usize]);
                let want0 = (p..n).find(|&i| !model[i as usize]).unwrap_or(n);
                prop_assert_eq!(b.find_first(false, p).min(n), want0);
                let want1 = (p..n).find(|&i| model[i as usize]);
                prop_assert_eq!(Some(b.find_first(true, p)).filter(|&x| x < n), want1);
                let wantl = (0..p).rev().find(|&i| model[i as usize]);
                prop_assert_eq!(b.find_last_set(p), wantl);
            }
            let ones = model.iter().filter(|x| **x).count() as u64;
            prop_assert_eq!(b.count(0..n), ones);
            let mut rebuilt = vec![false; n as usize];
            for r in b.ranges(0..n) { for i in r { rebuilt[i as usize] = true; } }
            prop_assert_eq!(&rebuilt, &model);
            let words = b.words_u32(32, 3000);
            for (k, w) in words.iter().enumerate() {
                for bit in 0..32 {
                    let i = 32 + k * 32 + bit;
                    prop_assert_eq!(w >> bit & 1 == 1, model[i], "word bit {}", i);
                }
            }
            let mut holes = vec![true; n as usize];
            for r in b.missing(0..n) { for i in r { holes[i as usize] = false; } }
            prop_assert_eq!(&holes, &model);
        }
    }
}

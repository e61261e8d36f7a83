//! Eight bytes at a time where a byte at a time would do nothing but
//! wait: the rest of a start line, a value nobody reads, a header name.
//! `HeaderScan::advance` takes as many bytes of a word as it can and
//! leaves the scan exactly where `step` would have (the fuzz target and
//! the tests hold it to that); the byte that ends the run goes to `step`.

use super::{HeaderScan, LINE_START, NAME, SKIP, START_REST};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that equals `b`; exact for the
/// lowest such byte, which is all `first` reads.
#[inline(always)]
const fn bytes_eq(w: u64, b: u8) -> u64 {
    let v = w ^ (ONES * b as u64);
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The index of the lowest flagged byte of `mask`, 8 when none: without
/// a count-trailing-zeros instruction, which BPF lacks.
#[inline(always)]
const fn first(mask: u64) -> u32 {
    if mask == 0 {
        return 8;
    }
    let mut m = mask;
    let mut n = 0;
    if m & 0xffff_ffff == 0 {
        n += 4;
        m >>= 32;
    }
    if m & 0xffff == 0 {
        n += 2;
        m >>= 16;
    }
    if m & 0xff == 0 {
        n += 1;
    }
    n
}

/// `w` with its ASCII capitals in lower case, as `fold` does byte by byte.
#[inline(always)]
const fn fold_word(w: u64) -> u64 {
    let low = w & !HIGHS;
    let from_a = low.wrapping_add(ONES * (0x80 - b'A' as u64));
    let past_z = low.wrapping_add(ONES * (0x80 - b'Z' as u64 - 1));
    let upper = from_a & !past_z & !w & HIGHS;
    w | (upper >> 2)
}

impl HeaderScan {
    /// Whether `advance` may take bytes in the scan's state: the caller
    /// loads a word only then.
    #[inline(always)]
    pub fn takes_words(&self) -> bool {
        matches!(self.state, SKIP | START_REST | LINE_START)
            || (self.state == NAME && self.name_len >= 8)
    }

    /// Takes the first bytes of `word` (eight bytes of the message from
    /// the scan's position, loaded little-endian: the first byte lowest)
    /// that `step` would only wait through, and says how many (0: give
    /// the next byte to `step`).
    #[inline(always)]
    pub fn advance(&mut self, word: u64) -> u32 {
        let n = match self.state {
            SKIP | START_REST => first(line_end(word)),
            LINE_START => {
                let b = word as u8;
                if b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' {
                    return 0;
                }
                let n = first(line_end(word) | name_end(word));
                if n == 0 {
                    // A colon first: `step` reads it as the name's first byte.
                    return 0;
                }
                // What `step` does with a name's first byte.
                self.end_header();
                self.name_word = fold_word(word) & low_bytes(n);
                self.name_len = n;
                self.state = NAME;
                n
            }
            // Only past the eight bytes a name keeps: the rest is counted.
            NAME if self.name_len >= 8 => {
                let n = first(line_end(word) | name_end(word));
                self.name_len = self.name_len.saturating_add(n);
                n
            }
            _ => 0,
        };
        if n > 0 {
            self.window = if n >= 8 {
                word.swap_bytes()
            } else {
                (self.window << (8 * n)) | (word.swap_bytes() >> (8 * (8 - n)))
            };
        }
        n
    }
}

#[inline(always)]
const fn line_end(w: u64) -> u64 {
    bytes_eq(w, b'\r') | bytes_eq(w, b'\n')
}

/// What ends a header name: its colon or a blank.
#[inline(always)]
const fn name_end(w: u64) -> u64 {
    bytes_eq(w, b':') | bytes_eq(w, b' ') | bytes_eq(w, b'\t')
}

/// The low `n` bytes (1 to 8).
#[inline(always)]
const fn low_bytes(n: u32) -> u64 {
    if n >= 8 {
        !0
    } else {
        (1u64 << (8 * n)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_tricks_agree_with_the_bytes() {
        let samples: [&[u8; 8]; 6] = [
            b"Via: SIP",
            b"CALL-ID:",
            b"\r\nFrom: ",
            b"abcdefgh",
            b"@[`{Zaz~",
            b"\xc1\xda\x80AZaz\x00",
        ];
        for s in samples {
            let w = u64::from_le_bytes(*s);
            let folded: Vec<u8> = s.iter().map(|&b| super::super::fold(b)).collect();
            assert_eq!(fold_word(w).to_le_bytes().as_slice(), folded.as_slice());
            for t in [b':', b' ', b'\r', b'\n', b'a'] {
                let want = s.iter().position(|&b| b == t).map_or(8, |i| i as u32);
                assert_eq!(first(bytes_eq(w, t)), want, "{s:?} {t}");
            }
        }
    }
}

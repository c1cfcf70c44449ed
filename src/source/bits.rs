//! MSB-first bit reading and writing for H.264 syntax (fixed-width and
//! Exp-Golomb fields), shared by the depacketizer (which peeks at a slice's
//! type) and the open-GOP rewrite (which rewrites a slice header).

/// MSB-first bit reader over an RBSP.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    /// Bits read so far.
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        self.pos += 1;
        Some(u32::from(byte >> (7 - (self.pos - 1) % 8)) & 1)
    }

    pub(crate) fn u(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()?)
    }

    pub(crate) fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }

    /// Bit index of the last 1 bit (the rbsp_stop_one_bit).
    pub(crate) fn last_one_bit(&self) -> Option<usize> {
        let i = self.data.iter().rposition(|&b| b != 0)?;
        Some(i * 8 + 7 - self.data[i].trailing_zeros() as usize)
    }
}

/// MSB-first bit writer.
#[derive(Default)]
pub(crate) struct Writer {
    /// The bytes written; the last may be partly filled.
    pub(crate) out: Vec<u8>,
    /// Bits written so far.
    pub(crate) bits: usize,
}

impl Writer {
    pub(crate) fn bit(&mut self, b: u32) {
        if self.bits % 8 == 0 {
            self.out.push(0);
        }
        if b != 0 {
            let last = self.out.len() - 1;
            self.out[last] |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    pub(crate) fn u(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1);
        }
    }

    pub(crate) fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        for _ in 0..len - 1 {
            self.bit(0);
        }
        for i in (0..len).rev() {
            self.bit(((x >> i) & 1) as u32);
        }
    }

    pub(crate) fn se(&mut self, v: i32) {
        let k = if v > 0 {
            (i64::from(v) * 2 - 1) as u32
        } else {
            (-i64::from(v) * 2) as u32
        };
        self.ue(k);
    }

    /// Copies bits `from..to` of `data`; whole bytes when both sides are
    /// byte aligned (CABAC slice data).
    pub(crate) fn copy_bits(&mut self, data: &[u8], mut from: usize, to: usize) {
        if self.bits % 8 == 0 && from % 8 == 0 {
            let whole = (to - from) / 8;
            self.out
                .extend_from_slice(&data[from / 8..from / 8 + whole]);
            self.bits += whole * 8;
            from += whole * 8;
        }
        for i in from..to {
            self.bit(u32::from(data[i / 8] >> (7 - i % 8)) & 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_round_trips() {
        let mut w = Writer::default();
        for v in [0u32, 1, 2, 3, 7, 8, 255, 65_535, 1 << 20] {
            w.ue(v);
        }
        for v in [0i32, 1, -1, 2, -2, 26, -26, 1000] {
            w.se(v);
        }
        w.u(0b101, 3);
        let mut r = Reader::new(&w.out);
        for v in [0u32, 1, 2, 3, 7, 8, 255, 65_535, 1 << 20] {
            assert_eq!(r.ue(), Some(v));
        }
        for v in [0i32, 1, -1, 2, -2, 26, -26, 1000] {
            assert_eq!(r.se(), Some(v));
        }
        assert_eq!(r.u(3), Some(0b101));
    }

    #[test]
    fn copy_bits_unaligned() {
        let mut w = Writer::default();
        w.u(1, 1);
        w.copy_bits(&[0b1010_1010, 0b1111_0000], 2, 12);
        assert_eq!(w.bits, 11);
        assert_eq!(w.out, [0b1101_0101, 0b1110_0000]);
    }
}

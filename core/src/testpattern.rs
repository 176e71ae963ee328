//! A moving v210 colour-bar test pattern whose every line is stamped with the grain index and
//! line number, so a reader can verify each grain byte for byte (and detect stale slots).

/// 75 % colour bars, 10-bit BT.709 narrow range: (Y, Cb, Cr).
const BARS: [(u32, u32, u32); 8] = [
    (721, 512, 512), // white
    (646, 176, 567), // yellow
    (525, 625, 176), // cyan
    (450, 289, 231), // green
    (335, 735, 793), // magenta
    (260, 399, 848), // red
    (139, 848, 457), // blue
    (64, 512, 512),  // black
];

/// Bytes per v210 line: `((w + 47) / 48) * 128` (MXL MediaUtils).
pub fn v210_stride(width: u32) -> usize {
    width.div_ceil(48) as usize * 128
}

/// One line of bars shifted left by `shift` pixels, packed as v210.
fn bars_line(width: u32, shift: u32, out: &mut [u8]) {
    out.fill(0);
    let pixel = |x: u32| {
        let bar = ((x + shift) % width) as u64 * 8 / u64::from(width);
        BARS[bar as usize]
    };
    // v210: 6 pixels per 16-byte block, four LE words of three 10-bit components:
    // [Cb0 Y0 Cr0] [Y1 Cb2 Y2] [Cr2 Y3 Cb4] [Y4 Cr4 Y5].
    let blocks = width.div_ceil(6);
    for b in 0..blocks {
        let x0 = b * 6;
        let p = |i: u32| pixel((x0 + i).min(width - 1));
        let (y0, cb0, cr0) = p(0);
        let (y1, _, _) = p(1);
        let (y2, cb2, cr2) = p(2);
        let (y3, _, _) = p(3);
        let (y4, cb4, cr4) = p(4);
        let (y5, _, _) = p(5);
        let words = [
            cb0 | y0 << 10 | cr0 << 20,
            y1 | cb2 << 10 | y2 << 20,
            cr2 | y3 << 10 | cb4 << 20,
            y4 | cr4 << 10 | y5 << 20,
        ];
        let at = b as usize * 16;
        if at + 16 > out.len() {
            break;
        }
        for (i, w) in words.iter().enumerate() {
            out[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Writes the first 12 bytes of a line: grain index (u64 LE) and line number (u32 LE).
fn stamp(line: &mut [u8], index: u64, line_no: u32) {
    if line.len() >= 12 {
        line[..8].copy_from_slice(&index.to_le_bytes());
        line[8..12].copy_from_slice(&line_no.to_le_bytes());
    }
}

/// Fills lines `first..last` of a v210 grain of `width` pixels with the pattern for `index`.
pub fn fill_v210_lines(width: u32, index: u64, first: u32, last: u32, grain: &mut [u8]) {
    let stride = v210_stride(width);
    let mut base = vec![0u8; stride];
    bars_line(width, (index * 8 % u64::from(width)) as u32, &mut base);
    for l in first..last {
        let Some(line) = grain.get_mut(l as usize * stride..(l as usize + 1) * stride) else {
            break;
        };
        line.copy_from_slice(&base);
        stamp(line, index, l);
    }
}

/// Fills a whole v210 grain of `width` x `lines` with the pattern for `index`.
pub fn fill_v210(width: u32, lines: u32, index: u64, grain: &mut [u8]) {
    fill_v210_lines(width, index, 0, lines, grain);
}

/// Checks lines `0..lines` of a v210 grain against the pattern for `index`.
/// Returns the first wrong line and what its stamp says.
pub fn verify_v210(width: u32, lines: u32, index: u64, grain: &[u8]) -> Result<(), String> {
    let stride = v210_stride(width);
    let mut expected = vec![0u8; stride];
    bars_line(width, (index * 8 % u64::from(width)) as u32, &mut expected);
    for l in 0..lines {
        let Some(line) = grain.get(l as usize * stride..(l as usize + 1) * stride) else {
            return Err(format!(
                "grain {index}: line {l} missing (grain of {} bytes)",
                grain.len()
            ));
        };
        stamp(&mut expected, index, l);
        if line != expected.as_slice() {
            let got_index = u64::from_le_bytes(line[..8].try_into().unwrap_or_default());
            let got_line = u32::from_le_bytes(line[8..12].try_into().unwrap_or_default());
            return Err(format!(
                "grain {index}: line {l} differs (stamp says grain {got_index} line {got_line})"
            ));
        }
    }
    Ok(())
}

/// A deterministic byte pattern for non-video payloads: byte `k` of unit `index`.
pub fn fill_bytes(index: u64, out: &mut [u8]) {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_catches_wrong_index_and_line() {
        let (w, h) = (1920, 4);
        let mut g = vec![0u8; v210_stride(w) * h as usize];
        fill_v210(w, h, 7, &mut g);
        assert!(verify_v210(w, h, 7, &g).is_ok());
        assert!(verify_v210(w, h, 2, &g).is_err());
        g[v210_stride(w) * 3 + 100] ^= 1;
        assert!(verify_v210(w, h, 7, &g).unwrap_err().contains("line 3"));
    }

    #[test]
    fn bars_move_with_index() {
        let mut a = vec![0u8; v210_stride(1920)];
        let mut b = a.clone();
        bars_line(1920, 0, &mut a);
        bars_line(1920, 8, &mut b);
        assert_ne!(a, b);
        // First block of an unshifted line is white: Y = 721 in bits 10..20 of word 0.
        let w0 = u32::from_le_bytes(a[..4].try_into().unwrap());
        assert_eq!((w0 >> 10) & 0x3ff, 721);
    }
}
